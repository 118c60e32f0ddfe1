import { credentialsFor } from '../registry/docker-config.js';
import { formatReference, isDockerHub, type Reference } from '../oci/reference.js';
import { LABEL_PULL_SECRET, LABEL_PULL_USERNAME } from './labels.js';

/**
 * Where the snapshotter finds registry credentials for an image (upstream-surface §7.9), in
 * order: the snapshot labels `pullusername`/`pullsecret`, the credentials the CRI image service
 * proxy saw in a PullImage, then the Docker config. A password without a user name is a bearer
 * token (nydusd's `registry_token`); otherwise base64 `user:password` goes into `auth`.
 */

export interface RegistryAccess {
  auth?: string;
  registryToken?: string;
  /** Which source it came from, for logs (never the secret). */
  source: 'labels' | 'cri' | 'docker-config';
}

export interface CriAuth {
  username?: string;
  password?: string;
  /** base64 `user:password`. */
  auth?: string;
  registryToken?: string;
}

function access(user: string, secret: string, source: RegistryAccess['source']): RegistryAccess {
  if (user === '') return { registryToken: secret, source };
  return { auth: Buffer.from(`${user}:${secret}`).toString('base64'), source };
}

/** Credentials keyed by image reference without tag or digest ("host/repo"): one image's pull
 * serves every tag of that repository, as the CRI plugin's credentials are per pull. */
function repoKey(ref: Reference): string {
  return `${isDockerHub(ref.host) ? 'docker.io' : ref.host}/${ref.repository}`;
}

export class Keychain {
  readonly #cri = new Map<string, RegistryAccess>();
  readonly #env: NodeJS.ProcessEnv;

  constructor(env: NodeJS.ProcessEnv = process.env) {
    this.#env = env;
  }

  /** Record what a CRI PullImage carried (an empty auth config records nothing). */
  recordCri(ref: Reference, a: CriAuth): void {
    let got: RegistryAccess | undefined;
    if (a.registryToken !== undefined && a.registryToken !== '')
      got = { registryToken: a.registryToken, source: 'cri' };
    else if (a.auth !== undefined && a.auth !== '') got = { auth: a.auth, source: 'cri' };
    else if (a.username !== undefined && a.username !== '') got = access(a.username, a.password ?? '', 'cri');
    if (got !== undefined) this.#cri.set(repoKey(ref), got);
  }

  /** Number of images with CRI-recorded credentials (a metric). */
  get criEntries(): number {
    return this.#cri.size;
  }

  async forImage(ref: Reference, labels: Record<string, string>): Promise<RegistryAccess | undefined> {
    const user = labels[LABEL_PULL_USERNAME];
    const secret = labels[LABEL_PULL_SECRET];
    if (secret !== undefined && secret !== '') return access(user ?? '', secret, 'labels');
    const cri = this.#cri.get(repoKey(ref));
    if (cri !== undefined) return cri;
    const c = await credentialsFor(ref.host, this.#env);
    if (c === undefined) return undefined;
    // An identity token is an OAuth refresh token, which nydusd's registry backend cannot use.
    if ('identityToken' in c) return undefined;
    return access(c.username, c.password, 'docker-config');
  }
}

/** For logs: the image without secrets. */
export function describeRef(ref: Reference): string {
  return formatReference(ref);
}
