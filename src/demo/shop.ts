/** The demo shop's data, built once: responses that never change are serialized at start-up. */

export interface Product {
  id: number;
  name: string;
  category: string;
  price: number;
}

const KINDS = ['laptop', 'phone', 'tablet', 'monitor', 'keyboard', 'mouse', 'headset', 'camera', 'speaker', 'charger'];

export const PRODUCTS: Product[] = Array.from({ length: 100 }, (_, i) => {
  const kind = KINDS[i % KINDS.length]!;
  return {
    id: i + 1,
    name: `${kind} model ${Math.floor(i / KINDS.length) + 1}`,
    category: kind,
    price: 10 + ((i * 37) % 990),
  };
});

/** The first page, as GET /api/products returns it. */
export const PRODUCTS_PAGE = JSON.stringify({ products: PRODUCTS.slice(0, 20), total: PRODUCTS.length, page: 1 });

const searchCache = new Map<string, string>();
export function searchProducts(q: string): string {
  const key = q.toLowerCase().slice(0, 64);
  let hit = searchCache.get(key);
  if (hit === undefined) {
    const found = PRODUCTS.filter((p) => p.name.includes(key) || p.category.includes(key)).slice(0, 20);
    hit = JSON.stringify({ q: key, products: found, count: found.length });
    if (searchCache.size < 1000) searchCache.set(key, hit);
  }
  return hit;
}

export interface OrderItem {
  product_id: number;
  quantity: number;
}

/** Validate an order body; returns an error text or the normalized items. */
export function validateOrder(
  body: unknown,
): { items: OrderItem[]; payment_method: string; client_ref?: string } | string {
  if (!body || typeof body !== 'object') return 'body must be a JSON object';
  const { items, payment_method, client_ref } = body as Record<string, unknown>;
  if (!Array.isArray(items) || items.length === 0) return 'items must be a non-empty array';
  for (const item of items) {
    const { product_id, quantity } = (item ?? {}) as Record<string, unknown>;
    if (!Number.isInteger(product_id) || (product_id as number) < 1 || (product_id as number) > PRODUCTS.length)
      return 'unknown product_id';
    if (!Number.isInteger(quantity) || (quantity as number) < 1 || (quantity as number) > 100)
      return 'quantity must be 1..100';
  }
  if (payment_method !== undefined && typeof payment_method !== 'string') return 'payment_method must be a string';
  if (client_ref !== undefined && (typeof client_ref !== 'string' || client_ref.length < 1 || client_ref.length > 64))
    return 'client_ref must be a string of 1..64 characters';
  const order = { items: items as OrderItem[], payment_method: (payment_method as string) ?? 'credit_card' };
  return client_ref === undefined ? order : { ...order, client_ref };
}
