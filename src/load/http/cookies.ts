/**
 * A VU's cookie jar: name -> value per host. Deliberately small: it honours Set-Cookie's name/value
 * and deletion (Max-Age<=0 or an expiry in the past), not path or domain scoping, which load tests
 * of one service rarely need.
 */
export class CookieJar {
  private readonly byHost = new Map<string, Map<string, string>>();

  setFromHeader(host: string, setCookie: string): void {
    const semi = setCookie.indexOf(';');
    const pair = semi === -1 ? setCookie : setCookie.slice(0, semi);
    const eq = pair.indexOf('=');
    if (eq <= 0) return;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    const attrs = semi === -1 ? '' : setCookie.slice(semi + 1).toLowerCase();
    let jar = this.byHost.get(host);
    const expired =
      /max-age=\s*(-\d+|0)\b/.test(attrs) ||
      (/expires=([^;]+)/.exec(attrs)?.[1] !== undefined && Date.parse(/expires=([^;]+)/.exec(attrs)![1]!) < Date.now());
    if (expired) {
      jar?.delete(name);
      return;
    }
    if (!jar) {
      jar = new Map();
      this.byHost.set(host, jar);
    }
    jar.set(name, value);
  }

  /** The Cookie header for a host, or undefined when the jar has none. */
  header(host: string): string | undefined {
    const jar = this.byHost.get(host);
    if (!jar || jar.size === 0) return undefined;
    let out = '';
    for (const [k, v] of jar) out += out ? `; ${k}=${v}` : `${k}=${v}`;
    return out;
  }

  entries(host: string): Record<string, string> {
    return Object.fromEntries(this.byHost.get(host) ?? []);
  }
}
