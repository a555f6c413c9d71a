/**
 * The origin document's Locust and k6 shop tests as one Bulwark scenario: shoppers log in on start,
 * then view products, search, order and look at their history (3 : 2 : 1 : 1), with 1-3 s of think
 * time. Run it: `bulwark load examples/shop.ts --host http://127.0.0.1:8080` (or `bulwark demo`).
 */
import { between, Counter, scenario, Trend, user } from 'bulwark';

const orderDuration = new Trend('order_duration');
const ordersCreated = new Counter('orders_created');
const terms = ['laptop', 'phone', 'tablet', 'monitor', 'keyboard'];

export default scenario({
  host: 'http://127.0.0.1:8080',
  users: [
    user('Shopper', {
      wait: between(1, 3),
      async onStart(vu) {
        const r = await vu.http.post('/auth/login', {
          json: { email: `user_${vu.id}@example.com`, password: 'password123' },
        });
        vu.state.auth = { authorization: `Bearer ${r.status === 200 ? r.json().access_token : ''}` };
      },
      tasks: [
        {
          name: 'view products',
          weight: 3,
          run: async (vu) => {
            const r = await vu.http.get('/api/products', {
              headers: vu.state.auth,
              expect: (res) =>
                res.status === 200
                  ? res.json().products.length > 0 || 'no products returned'
                  : `got status ${res.status}`,
            });
            vu.check(r, { 'products: status is 200': (res) => res.status === 200 });
          },
        },
        {
          name: 'search products',
          weight: 2,
          run: async (vu) => {
            await vu.http.get('/api/products/search', {
              query: { q: vu.random.pick(terms) },
              headers: vu.state.auth,
              name: '/api/products/search',
            });
          },
        },
        {
          name: 'create order',
          weight: 1,
          run: async (vu) => {
            const items = Array.from({ length: vu.random.int(1, 3) }, () => ({
              product_id: vu.random.int(1, 100),
              quantity: vu.random.int(1, 5),
            }));
            const r = await vu.http.post('/api/orders', {
              json: { items, payment_method: vu.random.pick(['credit_card', 'paypal']) },
              headers: vu.state.auth,
              expect: (res) =>
                res.status === 201 || (res.status === 400 ? 'bad request' : `unexpected status ${res.status}`),
            });
            if (r.ok) {
              orderDuration.add(r.timings.duration);
              ordersCreated.add(1);
            }
            vu.check(r, { 'order: status is 201': (res) => res.status === 201 });
          },
        },
        {
          name: 'order history',
          weight: 1,
          run: async (vu) => {
            await vu.http.get('/api/orders/history', { headers: vu.state.auth });
          },
        },
      ],
    }),
  ],
  load: {
    stages: [
      { duration: '5s', target: 100 },
      { duration: '12s', target: 100 },
      { duration: '3s', target: 0 },
    ],
  },
  thresholds: {
    http_req_duration: ['p(99)<2000'],
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:/api/orders}': ['p(95)<3000'],
    order_duration: ['p(95)<3000'],
  },
});
