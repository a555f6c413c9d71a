import type { OrderItem } from './shop.js';

/** An order as the shop stores it. */
export interface NewOrder {
  email: string;
  items: OrderItem[];
  payment_method: string;
  /** The client's own reference for the order: tells an order apart from another that got the same id later. */
  client_ref?: string;
}

/**
 * Where the shop keeps orders when it has a database. Contract: `create` resolves with the order id
 * only once the order is committed; any rejection means "not acknowledged" (the shop answers 503), so
 * a client that saw 201 may count on the order existing.
 */
export interface OrderStore {
  create(order: NewOrder): Promise<string>;
  close?(): Promise<void>;
}

/** The orders table the SQL store writes (created if missing when the shop starts). */
export const ORDERS_TABLE_SQL = `CREATE TABLE IF NOT EXISTS orders (
  id bigserial PRIMARY KEY,
  email text NOT NULL,
  items jsonb NOT NULL,
  payment_method text NOT NULL,
  client_ref text,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
)`;

/** Anything with pg's `query(text, params)`: a pg.Pool, a pg.Client or bulwark/cluster's routing pool. */
export interface SqlQueryable {
  query(text: string, params?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }>;
}

/** Orders in PostgreSQL, one INSERT per order (autocommit: the id comes back only after COMMIT). */
export function sqlOrderStore(db: SqlQueryable & { end?(): Promise<void> }): OrderStore {
  return {
    async create(order) {
      const r = await db.query(
        'INSERT INTO orders (email, items, payment_method, client_ref) VALUES ($1, $2, $3, $4) RETURNING id',
        [order.email, JSON.stringify(order.items), order.payment_method, order.client_ref ?? null],
      );
      return `ord_${String(r.rows[0]!.id)}`;
    },
    close: db.end ? () => db.end!() : undefined,
  };
}
