import { escapeHtml } from '../html.ts';

/** The invitation email: the admin's subject and message, `%@` replaced by the user's registration URL. */

export interface InvitationEmailInput {
  subject: string;
  /** The admin's text; every `%@` becomes the registration URL. */
  message: string;
  /** `<public URL>/register/<code>`. */
  registrationUrl: string;
  senderName: string;
  senderAddress: string;
}

export interface RenderedEmail {
  subject: string;
  text: string;
  html: string;
}

export const URL_PLACEHOLDER = '%@';

/** One line, no control characters (a subject can never carry a header of its own). */
function oneLine(value: string): string {
  return value.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
}

/**
 * Renders the message as plain text and HTML. The subject is kept as the admin wrote it (on one
 * line); only the message's `%@` are replaced. In HTML the admin's text is escaped, each `%@` becomes
 * a link, blank lines separate paragraphs and single line breaks are kept.
 */
export function renderInvitationEmail(input: InvitationEmailInput): RenderedEmail {
  const url = input.registrationUrl;
  const message = input.message.replace(/\r\n?/g, '\n');
  const text = message.split(URL_PLACEHOLDER).join(url);

  const link = `<a href="${escapeHtml(url)}" style="color:#0b57d0;word-break:break-all">${escapeHtml(url)}</a>`;
  const paragraphs = message
    .split(/\n[ \t]*\n+/)
    .map((p) => p.replace(/^\n+|\n+$/g, ''))
    .filter((p) => p.trim() !== '')
    .map(
      (p) =>
        `<p style="margin:0 0 16px">${p
          .split(URL_PLACEHOLDER)
          .map((piece) => escapeHtml(piece).replace(/\n/g, '<br>\n'))
          .join(link)}</p>`,
    );
  const subject = oneLine(input.subject);
  const footer = escapeHtml(
    input.senderName ? `${oneLine(input.senderName)} <${input.senderAddress}>` : input.senderAddress,
  );
  const html = `<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(subject)}</title>
</head>
<body style="margin:0;padding:24px 12px;background:#f4f5f7;font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;font-size:16px;line-height:1.5;color:#1f2328">
<div style="max-width:560px;margin:0 auto;background:#ffffff;border:1px solid #dde1e6;border-radius:8px;padding:28px 28px 12px">
${paragraphs.join('\n')}
</div>
<p style="max-width:560px;margin:12px auto 0;font-size:13px;color:#656d76;text-align:center">${footer}</p>
</body>
</html>
`;
  return { subject, text, html };
}
