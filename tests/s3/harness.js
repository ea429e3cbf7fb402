#!/usr/bin/env node
// harness.js: a real S3 server (s3rver) on 127.0.0.1 plus a fault-injecting proxy in front of
// it, for thinimg's S3 tests and the fetch benchmark.
//
//   node harness.js --dir DIR [--bucket NAME]... [--seed BUCKET=LOCALDIR]...
//
// Prints one JSON line {"s3": PORT, "proxy": PORT} once both listen (random free ports), then
// serves until stdin closes or SIGTERM. Seeding PUTs every file under LOCALDIR into BUCKET
// (key = relative path).
//
// The proxy forwards everything to s3rver and can inject faults. Control endpoints:
//   POST /__ctl/fault  JSON rule, applied to the next matching requests:
//        {"match": "substring of the path", "method": "GET", "count": 1 (0 = forever),
//         "action": "status" | "stall" | "cut" | "norange" | "badrange" | "slow",
//         "status": 403, "code": "AccessDenied", "message": "...",   (status)
//         "after": BYTES,                                             (stall, cut)
//         "bytes_per_s": N, "piece": BYTES (16 KiB),                  (slow: each response
//         "delay_ms": N}                                               at that rate, the
//                                                                      first byte after delay)
//   POST /__ctl/reset  drop all rules and the request log
//   GET  /__ctl/log    the request log: [{method, path, range, ifMatch, status, bytes, fault,
//                      signed, contentSha}]
// The proxy also enforces If-Match, which s3rver ignores: a 200/206 whose ETag differs from
// the request's If-Match becomes 412 PreconditionFailed, as S3 answers.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const crypto = require('crypto');

// s3rver encrypts its continuation tokens with single DES ('des' = des-cbc), which OpenSSL 3
// only has in its legacy provider. Triple DES with the key repeated three times is the same
// cipher and is in the default provider, so listings over 1,000 keys work on any Node.
for (const fn of ['createCipheriv', 'createDecipheriv']) {
  const orig = crypto[fn];
  crypto[fn] = function (alg, key, iv, ...rest) {
    if (alg === 'des') return orig.call(crypto, 'des-ede3-cbc', Buffer.concat([key, key, key]), iv, ...rest);
    return orig.call(crypto, alg, key, iv, ...rest);
  };
}
const S3rver = require('s3rver');

function parseArgs(argv) {
  const o = { dir: null, buckets: [], seeds: [] };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--dir') o.dir = argv[++i];
    else if (a === '--bucket') o.buckets.push(argv[++i]);
    else if (a === '--seed') {
      const [b, d] = argv[++i].split('=');
      o.seeds.push({ bucket: b, dir: d });
    } else throw new Error('unknown argument ' + a);
  }
  if (!o.dir) throw new Error('--dir is required');
  return o;
}

function walk(dir, rel, out) {
  for (const name of fs.readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    const r = rel ? rel + '/' + name : name;
    const st = fs.statSync(p);
    if (st.isDirectory()) walk(p, r, out);
    else if (st.isFile()) out.push({ path: p, key: r, size: st.size });
  }
  return out;
}

function encodeKey(key) {
  return key.split('/').map(encodeURIComponent).join('/');
}

function put(port, bucket, key, file, size) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1', port, method: 'PUT', path: '/' + bucket + '/' + encodeKey(key),
        headers: { 'Content-Length': size }, agent: putAgent,
      },
      res => {
        res.resume();
        res.on('end', () =>
          res.statusCode === 200 ? resolve() : reject(new Error('PUT ' + key + ': ' + res.statusCode)));
      });
    req.on('error', reject);
    fs.createReadStream(file).pipe(req);
  });
}
const putAgent = new http.Agent({ keepAlive: true, maxSockets: 8 });

function errorXml(code, message) {
  return '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>' + code + '</Code><Message>' +
    message + '</Message><RequestId>harness</RequestId></Error>';
}

async function main() {
  const o = parseArgs(process.argv);
  fs.mkdirSync(o.dir, { recursive: true });
  const buckets = new Set(o.buckets.concat(o.seeds.map(s => s.bucket)));
  const server = new S3rver({
    address: '127.0.0.1', port: 0, silent: true, directory: o.dir,
    configureBuckets: [...buckets].map(name => ({ name })),
  });
  const addr = await server.run();
  const s3port = addr.port;

  for (const seed of o.seeds) {
    const files = walk(seed.dir, '', []);
    // a few in parallel: thousands of small keys seed in seconds
    let i = 0;
    const worker = async () => {
      while (i < files.length) {
        const f = files[i++];
        await put(s3port, seed.bucket, f.key, f.path, f.size);
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  // The "slow" action sends at most this much at a time, then waits as long as the rate says.
  const SLOW_PIECE = 16 * 1024;
  let rules = [];
  let log = [];
  const upstreamAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });

  const proxy = http.createServer((req, res) => {
    if (req.url.startsWith('/__ctl/')) return control(req, res);
    const entry = {
      method: req.method, path: req.url, range: req.headers['range'] || null,
      ifMatch: req.headers['if-match'] || null, status: 0, bytes: 0, fault: null,
      signed: 'authorization' in req.headers,
      contentSha: req.headers['x-amz-content-sha256'] || null,
    };
    log.push(entry);
    const rule = takeRule(req);
    if (rule) entry.fault = rule.action;
    if (rule && rule.action === 'status') {
      const body = req.method === 'HEAD' ? '' :
        errorXml(rule.code || 'InjectedError', rule.message || 'injected by the test harness');
      entry.status = rule.status;
      res.writeHead(rule.status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    const headers = Object.assign({}, req.headers);
    const ifMatch = headers['if-match'];
    delete headers['if-match'];
    if (rule && rule.action === 'norange') delete headers['range'];
    const up = http.request({
      host: '127.0.0.1', port: s3port, method: req.method, path: req.url, headers,
      agent: upstreamAgent,
    }, ures => {
      const outHeaders = Object.assign({}, ures.headers);
      if (rule && rule.action === 'norange') delete outHeaders['accept-ranges'];
      if (rule && rule.action === 'badrange' && outHeaders['content-range']) {
        // a Content-Range one byte off: "bytes S-E/T" -> "bytes S+1-E/T"
        outHeaders['content-range'] = outHeaders['content-range'].replace(
          /bytes (\d+)-/, (m, a) => 'bytes ' + (Number(a) + 1) + '-');
      }
      if (ifMatch && (ures.statusCode === 200 || ures.statusCode === 206) &&
          ures.headers['etag'] !== ifMatch) {
        ures.resume();
        const body = req.method === 'HEAD' ? '' : errorXml('PreconditionFailed',
          'At least one of the pre-conditions you specified did not hold');
        entry.status = 412;
        res.writeHead(412, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
        return;
      }
      entry.status = ures.statusCode;
      res.writeHead(ures.statusCode, outHeaders);
      const after = rule && (rule.action === 'stall' || rule.action === 'cut') ? rule.after || 0 : -1;
      const slow = rule && rule.action === 'slow' ? rule.bytes_per_s || 1024 : 0;
      let sent = 0;
      let stopped = false;
      let slowStarted = false;
      let slowQueue = Promise.resolve(); // the slow action's pieces, in order
      ures.on('data', chunk => {
        if (stopped) return;
        if (after >= 0 && sent + chunk.length >= after) {
          const part = chunk.subarray(0, after - sent);
          sent += part.length;
          entry.bytes = sent;
          stopped = true;
          ures.destroy();
          if (rule.action === 'cut') {
            // close abruptly, but only once the bytes before the cut are on the wire
            const sock = res.socket;
            if (part.length) res.write(part, () => sock.destroy());
            else sock.destroy();
          } else {
            if (part.length) res.write(part);
            // stall: keep the connection open and silent until the client gives up
            const t = setTimeout(() => res.socket && res.socket.destroy(), 300000);
            res.socket.on('close', () => clearTimeout(t));
          }
          return;
        }
        if (slow) {
          // at the rate, in pieces (s3rver answers a Range with one chunk of the whole range),
          // in order; the first piece after delay_ms (a first-byte latency, as real S3 has)
          ures.pause();
          const size = rule.piece || SLOW_PIECE;
          const delay = !slowStarted && rule.delay_ms ? rule.delay_ms : 0;
          slowStarted = true;
          slowQueue = slowQueue.then(() => new Promise(done => {
            const piece = () => {
              if (res.destroyed || !chunk.length) { ures.resume(); return done(); }
              const p = chunk.subarray(0, size);
              chunk = chunk.subarray(p.length);
              sent += p.length;
              entry.bytes = sent;
              res.write(p);
              setTimeout(piece, Math.ceil(p.length * 1000 / slow));
            };
            if (delay) setTimeout(piece, delay); else piece();
          }));
          return;
        }
        sent += chunk.length;
        entry.bytes = sent;
        if (!res.write(chunk)) {
          ures.pause();
          res.once('drain', () => ures.resume());
        }
      });
      ures.on('end', () => { if (!stopped) slowQueue.then(() => res.end()); });
      ures.on('error', () => res.socket && res.socket.destroy());
    });
    up.on('error', () => { if (!res.headersSent) { res.writeHead(502); } res.end(); });
    req.pipe(up);
    res.on('close', () => up.destroy());
  });

  function takeRule(req) {
    for (const r of rules) {
      if (r.count === -1) continue;
      if (r.method && r.method !== req.method) continue;
      if (r.match && !req.url.includes(r.match)) continue;
      if (r.count > 0) {
        r.count--;
        if (r.count === 0) r.count = -1;
      }
      return r;
    }
    return null;
  }

  function control(req, res) {
    let body = '';
    req.on('data', c => { body += c; });
    req.on('end', () => {
      const send = (code, obj) => {
        const s = JSON.stringify(obj);
        res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(s) });
        res.end(s);
      };
      try {
        if (req.url === '/__ctl/fault' && req.method === 'POST') {
          const r = JSON.parse(body);
          if (r.count === undefined) r.count = 1;
          rules.push(r);
          return send(200, { ok: true });
        }
        if (req.url === '/__ctl/reset') {
          rules = [];
          log = [];
          return send(200, { ok: true });
        }
        if (req.url === '/__ctl/log') return send(200, log);
        send(404, { error: 'unknown control endpoint' });
      } catch (e) {
        send(400, { error: String(e) });
      }
    });
  }

  await new Promise(r => proxy.listen(0, '127.0.0.1', r));
  process.stdout.write(JSON.stringify({ s3: s3port, proxy: proxy.address().port }) + '\n');

  const stop = () => {
    proxy.close();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch(err => {
  process.stderr.write('harness: ' + (err && err.stack || err) + '\n');
  process.exit(1);
});
