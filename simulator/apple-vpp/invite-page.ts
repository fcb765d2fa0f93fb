/**
 * The page the invitation URL opens (Apple's is on the App Store's sign-in site): the simulated user
 * "signs in with an Apple ID" and accepts or declines.
 */

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) =>
    c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '"' ? '&quot;' : '&#39;',
  );
}

function layout(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>
body{font-family:-apple-system,system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1d1d1f}
h1{font-size:1.4rem}label{display:block;margin:1rem 0 .3rem}input{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}
button{margin:1rem .5rem 0 0;padding:.5rem 1.2rem;font-size:1rem}.error{color:#b00020}.note{color:#6e6e73;font-size:.9rem}
</style>
</head>
<body>
${body}
<p class="note">Simulated Apple Apps and Books service: no real Apple ID is used.</p>
</body>
</html>
`;
}

export function invitationForm(opts: {
  orgName: string;
  locationName: string;
  action: string;
  error?: string;
  appleId?: string;
}): string {
  const title = `Sign in with your Apple ID to join ${opts.orgName}'s program`;
  return layout(
    title,
    `<h1 id="title">${esc(title)}</h1>
<p>${esc(opts.orgName)} (${esc(opts.locationName)}) invites you to receive apps and books it assigns to you.</p>
${opts.error ? `<p class="error" role="alert">${esc(opts.error)}</p>` : ''}
<form method="post" action="${esc(opts.action)}">
<label for="appleId">Apple ID</label>
<input id="appleId" name="appleId" type="text" autocomplete="username" required value="${esc(opts.appleId ?? '')}">
<button type="submit" name="action" value="accept">Accept</button>
<button type="submit" name="action" value="decline" formnovalidate>Decline</button>
</form>`,
  );
}

export function invitationAccepted(opts: { orgName: string; appleId: string }): string {
  return layout(
    "You're in",
    `<h1 id="title">You're in</h1>
<p>Your Apple ID ${esc(opts.appleId)} now receives the apps and books ${esc(opts.orgName)} assigns to you.</p>`,
  );
}

export function invitationAlreadyAccepted(opts: { orgName: string }): string {
  return layout(
    'Invitation already accepted',
    `<h1 id="title">Invitation already accepted</h1>
<p>This invitation to ${esc(opts.orgName)}'s program was already accepted with another Apple ID. That Apple ID stays associated.</p>`,
  );
}

export function invitationDeclined(opts: { orgName: string }): string {
  return layout(
    'Invitation declined',
    `<h1 id="title">Invitation declined</h1>
<p>You did not join ${esc(opts.orgName)}'s program. You can open the invitation again later to accept it.</p>`,
  );
}

export function invitationGone(): string {
  return layout(
    'Invitation no longer valid',
    `<h1 id="title">Invitation no longer valid</h1>
<p>This invitation was withdrawn by the organization.</p>`,
  );
}

export function invitationNotFound(): string {
  return layout(
    'Invitation not found',
    `<h1 id="title">Invitation not found</h1>
<p>This invitation link is not valid. Check the link in your invitation.</p>`,
  );
}
