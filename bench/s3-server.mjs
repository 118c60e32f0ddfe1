// s3rver (npm) as a process of its own, for B9: the benchmark's harness blocks in spawnSync while
// a command runs, so a server in its process could not answer. Prints `{"port":N}` once it
// listens on 127.0.0.1 and serves until it is killed.
//
//   node bench/s3-server.mjs DIR BUCKET
import console from 'node:console';
import process from 'node:process';
import S3rver from 's3rver';

const [dir, bucket] = process.argv.slice(2);
if (dir === undefined || bucket === undefined) {
  console.error('usage: node bench/s3-server.mjs DIR BUCKET');
  process.exit(2);
}
const s3 = new S3rver({
  port: 0,
  address: '127.0.0.1',
  silent: true,
  directory: dir,
  configureBuckets: [{ name: bucket }],
});
const { port } = await s3.run();
console.log(JSON.stringify({ port }));
for (const sig of /** @type {const} */ (['SIGTERM', 'SIGINT'])) {
  process.once(sig, () => {
    s3.close().finally(() => process.exit(0));
  });
}
