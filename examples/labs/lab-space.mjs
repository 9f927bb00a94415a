// The tenants' add and remove steps of the labs example:
//   node lab-space.mjs add NAME      creates the lab's data space in the store (kept if it exists)
//   node lab-space.mjs remove NAME   deletes it
// Drover runs them on the lab's instance with TENANT_NAME set and the role's imports in the
// environment (STORE_URL). Exit 0 is success; anything else makes Drover retry `add` with
// backoff (then mark the tenant failed with this program's last output lines).
const [action, name] = process.argv.slice(2);
const store = (process.env.STORE_URL ?? '').split(',')[0];
if (!store) {
  console.error('lab-space: STORE_URL is not set (the labs role imports store.url)');
  process.exit(2);
}
if (!name || !['add', 'remove'].includes(action)) {
  console.error('usage: lab-space.mjs add|remove NAME');
  process.exit(2);
}
const res = await fetch(`${store}/labs/${encodeURIComponent(name)}`, { method: action === 'add' ? 'PUT' : 'DELETE', signal: AbortSignal.timeout(10_000) });
if (action === 'add' && (res.status === 200 || res.status === 201)) {
  console.log(`lab ${name}: data space ${res.status === 201 ? 'created' : 'already there'}`);
} else if (action === 'remove' && (res.status === 204 || res.status === 404)) {
  console.log(`lab ${name}: data space ${res.status === 204 ? 'deleted' : 'already gone'}`);
} else {
  console.error(`lab-space ${action} ${name}: the store answered ${res.status} ${await res.text()}`);
  process.exit(1);
}
