import { describe, expect, it } from 'vitest';
import { type OrderStore, startDemoServer } from '../../src/demo/index.js';

const login = async (url: string) => {
  const r = await fetch(`${url}/auth/login`, {
    method: 'POST',
    body: JSON.stringify({ email: 'a@example.com', password: 'pw' }),
  });
  return ((await r.json()) as { access_token: string }).access_token;
};
const order = (url: string, token: string) =>
  fetch(`${url}/api/orders`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}` },
    body: JSON.stringify({ items: [{ product_id: 1, quantity: 1 }] }),
  });

describe('demo shop: orders in a store, signed tokens, failing health', () => {
  it('a token signed by one instance is accepted by another sharing the secret (users survive a deploy)', async () => {
    const a = await startDemoServer({ tokenSecret: 's3cret' });
    const b = await startDemoServer({ tokenSecret: 's3cret' });
    const c = await startDemoServer({ tokenSecret: 'other' });
    try {
      const token = await login(a.url);
      expect((await order(b.url, token)).status).toBe(201);
      expect((await order(c.url, token)).status).toBe(401);
      expect((await order(b.url, `${token.slice(0, -2)}xx`)).status).toBe(401);
    } finally {
      await Promise.all([a.close(), b.close(), c.close()]);
    }
  });

  it('acknowledges an order with the id the store committed, and answers 503 when the store failed', async () => {
    let fail = false;
    const stored: string[] = [];
    const orders: OrderStore = {
      async create(o) {
        if (fail) throw new Error('connection to the primary broke');
        stored.push(o.email);
        return `ord_${stored.length + 41}`;
      },
    };
    const s = await startDemoServer({ orders, healthStatus: 503 });
    try {
      const token = await login(s.url);
      const ok = await order(s.url, token);
      expect(ok.status).toBe(201);
      expect(await ok.json()).toMatchObject({ order_id: 'ord_42' });
      fail = true;
      const r = await order(s.url, token);
      expect(r.status).toBe(503);
      expect(await r.text()).toMatch(/order not stored: connection to the primary broke/);
      expect(stored).toEqual(['a@example.com']);
      expect((await fetch(`${s.url}/health`)).status).toBe(503);
    } finally {
      await s.close();
    }
  });
});
