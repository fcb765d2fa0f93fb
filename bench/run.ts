/** `npm run bench -- <name> [flags]`: runs one benchmark and prints its results as a Markdown table. */
import { benchInvitations } from './invitations.ts';
import { benchMdmCore } from './mdm-core.ts';
import { benchPrompts } from './prompts.ts';

const benches: Record<string, (argv: string[]) => Promise<void>> = {
  'mdm-core': benchMdmCore,
  invitations: benchInvitations,
  prompts: benchPrompts,
};

const [name = 'mdm-core', ...rest] = process.argv.slice(2);
const bench = benches[name];
if (!bench) {
  console.error(`unknown benchmark ${name}; one of: ${Object.keys(benches).join(', ')}`);
  process.exit(2);
}
const started = Date.now();
bench(rest).then(
  () => console.log(`\n(${name}: ${((Date.now() - started) / 1000).toFixed(1)} s, node ${process.version})`),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
