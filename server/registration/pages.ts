import { escapeHtml } from '../html.ts';

/**
 * The registration pages end users see: small, self-contained HTML (one inline `<style>` allowed by
 * the response's CSP nonce; no script, no image, no external resource), readable on a phone.
 */

const STYLE = `
:root{color-scheme:light dark;--bg:#f3f4f6;--card:#fff;--text:#1d1d1f;--muted:#5c6068;--line:#d6d9de;--accent:#0a66d8;--on-accent:#fff;--err-bg:#fdecea;--err:#a4130f;--ok:#1a7f37}
@media (prefers-color-scheme:dark){:root{--bg:#121316;--card:#1d1e22;--text:#f1f1f3;--muted:#a3a7ae;--line:#383b41;--accent:#4b93ff;--on-accent:#0b1220;--err-bg:#3b1715;--err:#ffb4ab;--ok:#56d364}}
*{box-sizing:border-box}
html{font:16px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;-webkit-text-size-adjust:100%}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;padding:24px 16px;background:var(--bg);color:var(--text)}
main{width:100%;max-width:400px;padding:32px 28px;background:var(--card);border:1px solid var(--line);border-radius:14px;box-shadow:0 1px 2px rgba(0,0,0,.04),0 8px 24px rgba(0,0,0,.06)}
.org{margin:0 0 6px;font-size:.8125rem;font-weight:600;letter-spacing:.05em;text-transform:uppercase;color:var(--muted)}
h1{margin:0 0 10px;font-size:1.5rem;line-height:1.25;font-weight:650}
p{margin:0 0 18px;color:var(--muted)}
strong{color:var(--text);font-weight:600}
label{display:block;margin:0 0 6px;font-size:.9375rem;font-weight:600}
input{display:block;width:100%;margin:0 0 16px;padding:10px 12px;font:inherit;color:inherit;background:transparent;border:1px solid var(--line);border-radius:8px}
input:focus{outline:2px solid var(--accent);outline-offset:1px;border-color:transparent}
button{display:block;width:100%;margin:6px 0 0;padding:11px 16px;font:inherit;font-weight:600;color:var(--on-accent);background:var(--accent);border:0;border-radius:8px;cursor:pointer}
button:hover{filter:brightness(1.07)}
button:focus-visible{outline:2px solid var(--accent);outline-offset:2px}
.error{margin:0 0 18px;padding:10px 12px;border-radius:8px;background:var(--err-bg);color:var(--err)}
.badge{display:flex;align-items:center;justify-content:center;width:44px;height:44px;margin:0 0 16px;border-radius:50%;font-size:1.375rem;font-weight:700;border:2px solid currentColor}
.badge.ok{color:var(--ok)}.badge.warn{color:var(--err)}
.note{margin:18px 0 0;font-size:.8125rem}
a{color:var(--accent)}
main>:last-child{margin-bottom:0}
`;

interface LayoutInput {
  title: string;
  nonce: string;
  orgName?: string | null;
  /** A round mark above the heading: a check (done) or an exclamation mark (a problem). */
  badge?: 'ok' | 'warn';
  body: string;
}

const BADGES = {
  ok: '<div class="badge ok" aria-hidden="true">&#10003;</div>\n',
  warn: '<div class="badge warn" aria-hidden="true">!</div>\n',
};

function layout(p: LayoutInput): string {
  const head =
    (p.badge ? BADGES[p.badge] : '') + (p.orgName ? `<p class="org">${escapeHtml(p.orgName)}</p>\n` : '');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>${escapeHtml(p.title)}</title>
<style nonce="${escapeHtml(p.nonce)}">${STYLE}</style>
</head>
<body>
<main>
${head}${p.body}
</main>
</body>
</html>
`;
}

export interface LoginPageInput {
  nonce: string;
  orgName?: string | null;
  invitationName: string;
  csrfToken: string;
  /** Shown above the form (e.g. after wrong credentials); says nothing about which part was wrong. */
  error?: string | null;
  /** The username typed before, kept in the field after a failed attempt. */
  username?: string;
}

/** The login form: posts `username`, `password` and `csrfToken` to the page's own URL. */
export function renderLoginPage(p: LoginPageInput): string {
  const error = p.error ? `<p class="error" id="login-error" role="alert">${escapeHtml(p.error)}</p>\n` : '';
  const describedBy = p.error ? ' aria-describedby="login-error"' : '';
  const autofocusUser = p.username ? '' : ' autofocus';
  const autofocusPassword = p.username ? ' autofocus' : '';
  return layout({
    title: 'Sign in to register',
    nonce: p.nonce,
    orgName: p.orgName ?? null,
    body: `<h1>Sign in to register</h1>
<p>Sign in with your organization account to accept the invitation <strong>${escapeHtml(p.invitationName)}</strong>.</p>
${error}<form method="post">
<input type="hidden" name="csrfToken" value="${escapeHtml(p.csrfToken)}">
<label for="username">Username</label>
<input id="username" name="username" type="text" autocomplete="username" autocapitalize="none" autocorrect="off" spellcheck="false" maxlength="256" required${autofocusUser}${describedBy} value="${escapeHtml(p.username ?? '')}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" maxlength="1024" required${autofocusPassword}${describedBy}>
<button type="submit">Sign in and continue</button>
</form>
<p class="note">Next, Apple asks you to accept the invitation with your Apple Account.</p>`,
  });
}

export const LOGIN_FAILED_MESSAGE = 'The username or password is incorrect. Please try again.';
export const LOGIN_UNAVAILABLE_MESSAGE =
  'Sign-in is temporarily unavailable. Please try again in a few minutes.';

export function renderRegisteredPage(p: {
  nonce: string;
  orgName?: string | null;
  invitationName: string;
}): string {
  return layout({
    title: 'Already registered',
    nonce: p.nonce,
    orgName: p.orgName ?? null,
    badge: 'ok',
    body: `<h1>You're already registered</h1>
<p>You have already accepted <strong>${escapeHtml(p.invitationName)}</strong>. There is nothing more to do.</p>`,
  });
}

export function renderNotFoundPage(p: { nonce: string }): string {
  return layout({
    title: 'Link not valid',
    nonce: p.nonce,
    badge: 'warn',
    body: `<h1>This link is not valid</h1>
<p>The invitation link may be incomplete, or the invitation was withdrawn. Ask your IT administrator for a new invitation.</p>`,
  });
}

export function renderThrottledPage(p: {
  nonce: string;
  orgName?: string | null;
  retryAfterSeconds: number;
}): string {
  const minutes = Math.max(1, Math.ceil(p.retryAfterSeconds / 60));
  return layout({
    title: 'Too many attempts',
    nonce: p.nonce,
    orgName: p.orgName ?? null,
    badge: 'warn',
    body: `<h1>Too many attempts</h1>
<p>For your security, sign-in for this invitation is paused. Please try again in ${minutes} minute${minutes === 1 ? '' : 's'}.</p>`,
  });
}

/** A POST without a valid CSRF token (a form used twice, kept open too long, or not ours). */
export function renderExpiredPage(p: { nonce: string; orgName?: string | null }): string {
  return layout({
    title: 'Page expired',
    nonce: p.nonce,
    orgName: p.orgName ?? null,
    badge: 'warn',
    body: `<h1>This page has expired</h1>
<p>For your security, each sign-in form can be used only once and for a limited time.</p>
<p><a href="">Open the sign-in page again</a></p>`,
  });
}

/** The Apple invitation URL is not known yet. */
export function renderNotReadyPage(p: {
  nonce: string;
  orgName?: string | null;
  invitationName: string;
}): string {
  return layout({
    title: 'Invitation not ready',
    nonce: p.nonce,
    orgName: p.orgName ?? null,
    body: `<h1>Almost ready</h1>
<p>Your invitation <strong>${escapeHtml(p.invitationName)}</strong> is still being prepared. Please open the link again in a few minutes.</p>`,
  });
}

export function renderErrorPage(p: { nonce: string }): string {
  return layout({
    title: 'Something went wrong',
    nonce: p.nonce,
    body: `<h1>Something went wrong</h1>
<p>Please open the link again in a few minutes. If this keeps happening, contact your IT administrator.</p>`,
  });
}
