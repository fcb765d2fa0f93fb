/**
 * The Apple side the simulator plays next to its devices: the APNs gateway and the Apps and Books
 * service, started with the development PKI of a server on the same machine.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ApnsGateway } from './apns/index.ts';
import { AppleVppService } from './apple-vpp/service.ts';

export interface SimulatorPki {
  caPem: string;
  certPem: string;
  keyPem: string;
}

/** The simulator's TLS identity and the CA from the server's data dir (`certs/`, made by `npm start`). */
export async function readSimulatorPki(dataDir: string): Promise<SimulatorPki> {
  const dir = path.join(dataDir, 'certs');
  const read = (name: string) => fs.readFile(path.join(dir, name), 'utf8');
  try {
    const [caPem, certPem, keyPem] = await Promise.all([
      read('ca.pem'),
      read('simulator.pem'),
      read('simulator.key.pem'),
    ]);
    return { caPem, certPem, keyPem };
  } catch (err) {
    throw new Error(
      `cannot read the simulator certificate in ${dir} (${(err as NodeJS.ErrnoException).code ?? 'error'}): ` +
        'start the server once (npm start) on this machine, or pass --apns URL / --apple-vpp off',
      { cause: err },
    );
  }
}

export async function startGateway(
  pki: SimulatorPki,
  port: number,
): Promise<{ gateway: ApnsGateway; url: string }> {
  const gateway = new ApnsGateway({
    port,
    tlsCertPem: pki.certPem,
    tlsKeyPem: pki.keyPem,
    clientCaPems: [pki.caPem],
  });
  const { url } = await gateway.start();
  return { gateway, url };
}

export async function startAppleVpp(
  pki: SimulatorPki,
  port: number,
  stateDir: string,
): Promise<{ service: AppleVppService; url: string; demoToken: string }> {
  await fs.mkdir(stateDir, { recursive: true });
  const service = new AppleVppService({
    port,
    tlsCertPem: pki.certPem,
    tlsKeyPem: pki.keyPem,
    notificationCaPems: [pki.caPem],
    // A dotted name: device states are the `<udid>.json` files of the same folder.
    stateFile: path.join(stateDir, 'apple-vpp.state.json'),
  });
  const { url } = await service.start();
  const existing = service.locations()[0];
  const demoToken =
    existing?.sToken ??
    service.mintServiceToken({ orgName: 'Simulated Org', locationName: 'Simulated Location' });
  return { service, url, demoToken };
}
