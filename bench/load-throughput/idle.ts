/** Many VUs that mostly think (Locust's between(1, 3)): what memory does each idle VU cost? */
import { between, scenario, user } from 'bulwark';

export default scenario({
  host: 'http://127.0.0.1:8080',
  users: [user('Thinker', { wait: between(1, 3), tasks: [async (vu) => void (await vu.http.get('/api/products'))] })],
  load: { vus: 10000, duration: '20s' },
});
