/**
 * The origin document's SpikeTestUser: traffic jumps from a trickle to a crowd and back, to see
 * whether latency and errors recover. `bulwark load examples/spike.ts --host http://127.0.0.1:8080`
 */
import { between, scenario, user } from 'bulwark';

export default scenario({
  host: 'http://127.0.0.1:8080',
  users: [
    user('SpikeUser', {
      wait: between(0.5, 2),
      tasks: [async (vu) => void (await vu.http.get('/api/products'))],
    }),
  ],
  load: {
    stages: [
      { duration: '10s', target: 10 },
      { duration: '5s', target: 500 },
      { duration: '20s', target: 500 },
      { duration: '5s', target: 10 },
      { duration: '10s', target: 10 },
    ],
  },
  thresholds: { http_req_failed: ['rate<0.01'], http_req_duration: ['p(95)<1000'] },
});
