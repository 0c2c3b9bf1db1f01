// nodemailer's pooled transport as a peer for bench/bench_pool.py.
//
// Usage: node pool_bench.js PORT COUNT MESSAGE_FILE [CONNECTIONS]
//
// Sends COUNT copies of the raw message in MESSAGE_FILE to 127.0.0.1:PORT through
// nodemailer's pool (maxConnections CONNECTIONS, default 8, no per-connection message
// limit, plain SMTP) and prints one JSON line: {"elapsed", "cpu", "sent", "errors",
// "error"}; elapsed and cpu (user+sys of this process) cover the sending only, not
// start-up. Every message is offered at once: the pool queues them itself.
"use strict";

const fs = require("fs");
const nodemailer = require("nodemailer");

async function main() {
  const [port, count, file, connections] = process.argv.slice(2);
  if (!port || !count || !file) {
    console.error("usage: node pool_bench.js PORT COUNT MESSAGE_FILE [CONNECTIONS]");
    process.exit(2);
  }
  const raw = fs.readFileSync(file);
  const envelope = { from: "a@example.com", to: ["b@example.com"] };
  const transport = nodemailer.createTransport({
    pool: true,
    maxConnections: Number(connections || 8),
    maxMessages: Infinity,
    host: "127.0.0.1",
    port: Number(port),
    secure: false,
    ignoreTLS: true,
  });
  const total = Number(count);
  let sent = 0;
  let errors = 0;
  let firstError = null;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const jobs = [];
  for (let i = 0; i < total; i++) {
    jobs.push(
      transport.sendMail({ envelope, raw }).then(
        () => { sent++; },
        (err) => { errors++; if (firstError === null) firstError = String(err); },
      ),
    );
  }
  await Promise.all(jobs);
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  transport.close();
  process.stdout.write(JSON.stringify({
    elapsed,
    cpu: (cpu.user + cpu.system) / 1e6,
    sent,
    errors,
    error: firstError,
  }) + "\n");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
