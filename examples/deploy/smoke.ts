/** Smoke test of a new slot before it gets traffic: `bulwark deploy` runs it with thresholds. */
import { constant, scenario, user } from 'bulwark';

export default scenario({
  host: 'http://127.0.0.1:8080',
  users: [
    user('Smoke', {
      wait: constant(0.1),
      tasks: [
        async (vu) => void (await vu.http.get('/api/products')),
        async (vu) => void (await vu.http.get('/api/critical')),
      ],
    }),
  ],
  load: { executor: 'constant-vus', vus: 2, duration: '5s' },
  thresholds: { http_req_failed: ['rate<0.01'], http_req_duration: ['p(99)<1000'] },
});
