#!/usr/bin/env python3
"""server.py: a hostile HTTP / S3 server for thinimg's sources (tests/hostile/sources.py).

One ThreadingHTTPServer on 127.0.0.1 (never another address) that stops by itself after
--lifetime seconds. The behaviour is chosen per request by the path:

    /mode/<MODE>/<rest>

For the HTTP flavour thinimg is given http://127.0.0.1:PORT/mode/<MODE>/<key>; for the S3
flavour, --endpoint http://127.0.0.1:PORT/mode/<MODE> (path-style: the request path is
/mode/<MODE>/<bucket>/<key>, a listing is /mode/<MODE>/<bucket>/?list-type=2&...).

Objects are tar layers made by the driver and registered with Server.put(); every mode
serves them its own (wrong) way, see MODES below. Each request is logged (method, path,
Range, If-Match, If-Unmodified-Since); Server.log() returns the log.

The registry flavour (thinimg's docker:// source) answers the distribution API at /v2/ and
tokens at /token. The mode is the first component of the repository:
docker://127.0.0.1:PORT/<MODE>/<repo>:<tag>, see REGISTRY_MODES below; images are registered
with Server.put_image() (a tag naming a manifest or an index, and their blobs).

Standalone: python3 server.py [--lifetime S] prints the port and serves nothing but the
built-in demo objects; the driver imports it instead.
"""
import base64
import hashlib
import http.server
import json
import socketserver
import sys
import threading
import time
import urllib.parse

LM_A = 'Mon, 01 Jan 2024 00:00:00 GMT'
LM_B = 'Tue, 02 Jan 2024 00:00:00 GMT'
BUCKET = 'bkt'
# Legitimate listing pages; the hostile ones below send as many as they like.
PAGE_KEYS = 1000


def etag_of(data):
    return '"%s"' % hashlib.md5(data).hexdigest()


class State:
    """What the modes share: objects by key, per-(mode, key) request counters, the log."""

    def __init__(self):
        self.lock = threading.Lock()
        self.objects = {}   # key -> bytes (version A)
        self.objects_b = {}  # key -> bytes (version B, for the modes that change an object)
        self.counts = {}
        self.changed = set()  # keys whose version B is now served
        self.requests = []
        self.repos = {}  # registry: repo ('img') -> {'manifests': {ref: (body, type)},
        #                                             'blobs': {digest: bytes}, 'tags': [...]}
        self.redirect_base = None  # reg-redirect: where blobs are sent (another server)

    def bump(self, mode, key, method):
        with self.lock:
            k = (mode, key, method)
            self.counts[k] = self.counts.get(k, 0) + 1
            return self.counts[k]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'hostile/1'

    def log_message(self, fmt, *args):  # quiet: the driver prints what matters
        pass

    # ---- plumbing ------------------------------------------------------------------------

    def st(self):
        return self.server.state

    def parse(self):
        u = urllib.parse.urlsplit(self.path)
        parts = u.path.split('/', 3)  # '', 'mode', MODE, rest
        if len(parts) < 3 or parts[1] != 'mode':
            return None, None, None
        rest = urllib.parse.unquote(parts[3]) if len(parts) > 3 else ''
        return parts[2], rest, urllib.parse.parse_qs(u.query, keep_blank_values=True)

    def record(self, mode, rest):
        with self.st().lock:
            self.st().requests.append({
                'method': self.command, 'mode': mode, 'key': rest,
                'range': self.headers.get('Range'), 'if_match': self.headers.get('If-Match'),
                'if_unmodified_since': self.headers.get('If-Unmodified-Since'),
                'authorization': self.headers.get('Authorization'),
                'accept': self.headers.get('Accept')})

    def send(self, status, body=b'', headers=(), length=True):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if length:
            self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD' and body:
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def not_found(self):
        self.send(404, b'<Error><Code>NoSuchKey</Code><Message>no</Message></Error>',
                  [('Content-Type', 'application/xml')])

    def requested_start(self):
        r = self.headers.get('Range')
        if not r or not r.startswith('bytes=') or not r.endswith('-'):
            return None
        return int(r[6:-1])

    def serve_object(self, data, validators, honour_range=True, range_start_lie=None):
        """A correct object response (HEAD, GET, GET with Range) with the given validator
        headers; range_start_lie makes a 206 claim another start."""
        start = self.requested_start() if honour_range else None
        if start is None or self.command == 'HEAD':
            self.send(200, data, validators)
            return
        if start >= len(data):
            self.send(416, b'', validators + [('Content-Range', 'bytes */%d' % len(data))])
            return
        cr_start = start if range_start_lie is None else range_start_lie
        self.send(206, data[start:], validators + [
            ('Content-Range', 'bytes %d-%d/%d' % (cr_start, len(data) - 1, len(data)))])

    def cut(self, data, validators, upto):
        """Announce the whole object, send `upto` bytes, close the connection."""
        self.send_response(200)
        for k, v in validators:
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(data[:upto])
        self.wfile.flush()
        self.close_connection = True

    # ---- S3 listing ----------------------------------------------------------------------

    def list_page(self, keys, token=None, encoded=True, extra=''):
        items = ''.join('<Contents><Key>%s</Key><Size>%d</Size><ETag>&quot;e%d&quot;</ETag>'
                        '<LastModified>2024-01-01T00:00:00.000Z</LastModified></Contents>'
                        % (k, size, i) for i, (k, size) in enumerate(keys))
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>'
                '<Name>b</Name>%s<IsTruncated>%s</IsTruncated>%s%s%s</ListBucketResult>' % (
                    '<EncodingType>url</EncodingType>' if encoded else '',
                    'true' if token else 'false',
                    '<NextContinuationToken>%s</NextContinuationToken>' % token if token else '',
                    items, extra)).encode()
        self.send(200, body, [('Content-Type', 'application/xml')])

    # ---- dispatch ------------------------------------------------------------------------

    def do_HEAD(self):
        self.dispatch()

    def do_GET(self):
        self.dispatch()

    def dispatch(self):
        if self.path.startswith('/v2/') or self.path.startswith('/token'):
            try:
                registry(self)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return
        mode, rest, query = self.parse()
        if mode is None or mode not in MODES:
            self.not_found()
            return
        self.record(mode, rest)
        try:
            MODES[mode](self, rest, query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


# ---- the modes ---------------------------------------------------------------------------
# Keys for the HTTP flavour are the path after /mode/<MODE>/; for the S3 flavour they start
# with the bucket ("b/images/x/1.tar"). Objects are looked up without the bucket for both.

def obj_key(rest):
    # A C server's view of the key: it ends at the first NUL (what "%00" smuggles in).
    rest = rest.split('\0', 1)[0]
    return rest.split('/', 1)[1] if rest.startswith(BUCKET + '/') else rest


def m_plain(h, rest, q):
    """A correct server: strong ETag, Range."""
    data = h.st().objects.get(obj_key(rest))
    if data is None:
        return h.not_found()
    h.serve_object(data, [('ETag', etag_of(data))])


def changing(h, rest, validators_a, validators_b, honour_range_after=True):
    """Version A until the first GET, which is cut in the middle; version B after it."""
    key = obj_key(rest)
    a, b = h.st().objects.get(key), h.st().objects_b.get(key)
    if a is None or b is None:
        return h.not_found()
    if key in h.st().changed:
        return h.serve_object(b, validators_b, honour_range=honour_range_after)
    if h.command == 'HEAD':
        return h.serve_object(a, validators_a)
    with h.st().lock:
        h.st().changed.add(key)
    h.cut(a, validators_a, len(a) // 2)


def m_noetag_change(h, rest, q):
    """No ETag, no Last-Modified; the content changes after the first cut."""
    changing(h, rest, [], [])


def m_weak_change(h, rest, q):
    """The same weak ETag for both versions (weak: 'semantically equivalent')."""
    changing(h, rest, [('ETag', 'W/"same"')], [('ETag', 'W/"same"')])


def m_lm_change(h, rest, q):
    """Only Last-Modified, which changes with the content; If-Unmodified-Since ignored."""
    changing(h, rest, [('Last-Modified', LM_A)], [('Last-Modified', LM_B)])


def m_lm_then_etag(h, rest, q):
    """Last-Modified only for version A (cut in the middle); version B comes with a strong
    ETag and another Last-Modified: the ETag must not replace the pinned Last-Modified."""
    changing(h, rest, [('Last-Modified', LM_A)], [('ETag', '"b"'), ('Last-Modified', LM_B)])


def m_norange_change(h, rest, q):
    """No validator, the content changes after the first cut, and Range is ignored (200)."""
    changing(h, rest, [], [], honour_range_after=False)


def m_lm_stable(h, rest, q):
    """Only Last-Modified, stable content: the first GET is cut; a resume with
    If-Unmodified-Since is correct."""
    key = obj_key(rest)
    data = h.st().objects.get(key)
    if data is None:
        return h.not_found()
    v = [('Last-Modified', LM_A)]
    if h.command == 'GET' and h.st().bump('lm-stable', key, 'GET') == 1:
        return h.cut(data, v, len(data) // 2)
    h.serve_object(data, v)


def m_badrange(h, rest, q):
    """Strong ETag; the first GET is cut; a ranged GET gets a 206 that starts at byte 0."""
    key = obj_key(rest)
    data = h.st().objects.get(key)
    if data is None:
        return h.not_found()
    v = [('ETag', etag_of(data))]
    if h.command == 'GET' and h.st().bump('badrange', key, 'GET') == 1:
        return h.cut(data, v, len(data) // 2)
    h.serve_object(data, v, range_start_lie=0)


def m_endless_body(h, rest, q):
    """HEAD tells the real size; GET sends no length and never ends (connection close)."""
    data = h.st().objects.get(obj_key(rest))
    if data is None:
        return h.not_found()
    v = [('ETag', etag_of(data))]
    if h.command == 'HEAD':
        return h.serve_object(data, v)
    h.send_response(200)
    for k, val in v:
        h.send_header(k, val)
    h.send_header('Connection', 'close')
    h.end_headers()
    h.close_connection = True
    chunk = b'\0' * 65536
    h.wfile.write(data)
    deadline = time.monotonic() + h.server.lifetime
    while time.monotonic() < deadline:
        h.wfile.write(chunk)


def m_stall_once(h, rest, q):
    """The first GET sends its headers and then nothing; later ones are correct."""
    key = obj_key(rest)
    data = h.st().objects.get(key)
    if data is None:
        return h.not_found()
    v = [('ETag', etag_of(data))]
    if h.command == 'GET' and h.st().bump('stall-once', key, 'GET') == 1:
        h.send_response(200)
        for k, val in v:
            h.send_header(k, val)
        h.send_header('Content-Length', str(len(data)))
        h.end_headers()
        h.wfile.flush()
        h.server.stopping.wait(h.server.lifetime)
        h.close_connection = True
        return
    h.serve_object(data, v)


def m_trickle(h, rest, q):
    """Every GET trickles a few bytes per second, forever (well under the low-speed limit)."""
    key = obj_key(rest)
    data = h.st().objects.get(key)
    if data is None:
        return h.not_found()
    v = [('ETag', etag_of(data))]
    if h.command == 'HEAD':
        return h.serve_object(data, v)
    start = h.requested_start() or 0
    h.send_response(206 if start else 200)
    for k, val in v:
        h.send_header(k, val)
    h.send_header('Content-Length', str(len(data) - start))
    if start:
        h.send_header('Content-Range', 'bytes %d-%d/%d' % (start, len(data) - 1, len(data)))
    h.end_headers()
    h.close_connection = True
    pos = start
    while pos < len(data) and not h.server.stopping.is_set():
        h.wfile.write(data[pos:pos + 16])
        h.wfile.flush()
        pos += 16
        h.server.stopping.wait(0.2)


# S3 listings. The driver registers objects under "images/x/..." for these.

def s3_objects_or_list(h, rest, q, lister):
    if 'list-type' in q:
        return lister(h, q)
    m_plain(h, rest, q)


def m_nulkey(h, rest, q):
    """A listing whose second key is '2.tar%00.evil' (decodes to '2.tar', NUL, '.evil')."""
    def lister(h, q):
        h.list_page([('images/x/1.tar', len(h.st().objects['images/x/1.tar'])),
                     ('images/x/2.tar%00.evil', 10240)])
    s3_objects_or_list(h, rest, q, lister)


def m_longkey(h, rest, q):
    """A listing with one 5,000-byte key among valid ones."""
    def lister(h, q):
        h.list_page([('images/x/1.tar', len(h.st().objects['images/x/1.tar'])),
                     ('images/x/' + 'k' * 5000 + '.tar', 10240)])
    s3_objects_or_list(h, rest, q, lister)


def m_many_names(h, rest, q):
    """A family folder with 1.tar and 5,000 valid keys that are not layer names."""
    def lister(h, q):
        keys = ([('images/x/1.tar', len(h.st().objects['images/x/1.tar']))] +
                [('images/x/n%d' % i, 1) for i in range(5000)])
        n = token_page(h, q)
        more = (n + 1) * PAGE_KEYS < len(keys)
        h.list_page(keys[n * PAGE_KEYS:(n + 1) * PAGE_KEYS], token='t%d' % (n + 1) if more
                    else None)
    s3_objects_or_list(h, rest, q, lister)


def bad_keys(n, page):
    # Every key invalid (a control character after decoding): none is ever accepted.
    return [('images/x/bad%%01-%d-%d' % (page, i), 1) for i in range(n)]


def token_page(h, q):
    t = q.get('continuation-token', [''])[0]
    return int(t[1:]) if t.startswith('t') else 0


def m_cycle3(h, rest, q):
    """Tokens t1 -> t2 -> t3 -> t1 ...: a cycle of period 3; every page 1000 invalid keys."""
    def lister(h, q):
        n = token_page(h, q)
        h.list_page(bad_keys(PAGE_KEYS, n), token='t%d' % (n % 3 + 1))
    s3_objects_or_list(h, rest, q, lister)


def m_endless_list(h, rest, q):
    """A new token on every page, forever; every page 1000 invalid keys."""
    def lister(h, q):
        n = token_page(h, q)
        h.list_page(bad_keys(PAGE_KEYS, n), token='t%d' % (n + 1))
    s3_objects_or_list(h, rest, q, lister)


def m_growing_token(h, rest, q):
    """Tokens that grow by 100 bytes per page, no keys."""
    def lister(h, q):
        t = q.get('continuation-token', [''])[0]
        h.list_page([], token=t + 'g' * 100)
    s3_objects_or_list(h, rest, q, lister)


def m_slow_list(h, rest, q):
    """New tokens forever, one page every 0.3 s, one valid key per page (nothing else caps
    it before the wall-time limit)."""
    def lister(h, q):
        n = token_page(h, q)
        h.server.stopping.wait(0.3)
        h.list_page([('images/x/k%d' % n, 1)], token='t%d' % (n + 1))
    s3_objects_or_list(h, rest, q, lister)


MODES = {
    'plain': m_plain, 'noetag-change': m_noetag_change, 'weak-change': m_weak_change,
    'lm-change': m_lm_change, 'lm-then-etag': m_lm_then_etag, 'norange-change': m_norange_change, 'lm-stable': m_lm_stable,
    'badrange': m_badrange, 'endless-body': m_endless_body, 'stall-once': m_stall_once,
    'trickle': m_trickle, 'nulkey': m_nulkey, 'longkey': m_longkey, 'cycle3': m_cycle3,
    'endless-list': m_endless_list, 'many-names': m_many_names,
    'growing-token': m_growing_token, 'slow-list': m_slow_list,
}


# ---- the registry flavour ------------------------------------------------------------------

MT_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
MT_INDEX = 'application/vnd.oci.image.index.v1+json'
MT_CONFIG = 'application/vnd.oci.image.config.v1+json'
MT_LAYER = 'application/vnd.oci.image.layer.v1.tar'
MT_SCHEMA1 = 'application/vnd.docker.distribution.manifest.v1+prettyjws'
# Modes whose repositories need a bearer token, and the Basic credentials the token service
# wants for it (None: anonymous tokens).
TOKEN_MODES = {'reg-redirect': None, 'reg-auth': ('alice', 's3cret-pw')}
# Modes whose repositories want Basic credentials on every request.
BASIC_MODES = {'reg-basic': ('bob', 'basic-pw')}
MANIFEST_TOO_LARGE = 5 * 1024 * 1024  # over thinimg's 4 MiB


def digest(data):
    return 'sha256:' + hashlib.sha256(data).hexdigest()


def image(layers, arch='amd64'):
    """An OCI image of uncompressed tar layers: (manifest bytes, {digest: blob})."""
    config = json.dumps({'architecture': arch, 'os': 'linux', 'config': {},
                         'rootfs': {'type': 'layers',
                                    'diff_ids': [digest(x) for x in layers]}}).encode()
    manifest = json.dumps({
        'schemaVersion': 2, 'mediaType': MT_MANIFEST,
        'config': {'mediaType': MT_CONFIG, 'digest': digest(config), 'size': len(config)},
        'layers': [{'mediaType': MT_LAYER, 'digest': digest(x), 'size': len(x)}
                   for x in layers]}).encode()
    return manifest, dict({digest(x): x for x in layers}, **{digest(config): config})


def index(entries):
    """An OCI index of (os, arch, manifest bytes)."""
    return json.dumps({'schemaVersion': 2, 'mediaType': MT_INDEX, 'manifests': [
        {'mediaType': MT_MANIFEST, 'digest': digest(m), 'size': len(m),
         'platform': {'os': o, 'architecture': a}} for o, a, m in entries]}).encode()


def basic_header(user_pw):
    return 'Basic ' + base64.b64encode(('%s:%s' % user_pw).encode()).decode()


def reg_auth_ok(h, mode):
    if mode in BASIC_MODES:
        if h.headers.get('Authorization') == basic_header(BASIC_MODES[mode]):
            return True
        h.send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
               [('Content-Type', 'application/json'),
                ('WWW-Authenticate', 'Basic realm="hostile"')])
        return False
    if mode not in TOKEN_MODES:
        return True
    if h.headers.get('Authorization') == 'Bearer tok-' + mode:
        return True
    host = h.headers.get('Host')
    h.send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}', [
        ('Content-Type', 'application/json'),
        ('WWW-Authenticate', 'Bearer realm="http://%s/token",service="hostile",'
         'scope="repository:%s:pull"' % (host, h.reg_repo_path))])
    return False


def reg_token(h, q):
    scope = q.get('scope', [''])[0]
    mode = scope.split(':')[1].split('/')[0] if scope.count(':') == 2 else ''
    with h.st().lock:
        h.st().counts[('token', mode)] = h.st().counts.get(('token', mode), 0) + 1
    want = TOKEN_MODES.get(mode)
    if want:
        if h.headers.get('Authorization') != basic_header(want):
            h.send(401, b'{"details":"incorrect username or password"}',
                   [('Content-Type', 'application/json')])
            return
    h.send(200, json.dumps({'token': 'tok-' + mode, 'expires_in': 300}).encode(),
           [('Content-Type', 'application/json')])


def reg_manifest(h, mode, repo, ref):
    if mode == 'reg-stall':  # headers, then nothing: thinimg must cut it
        h.send_response(200)
        h.send_header('Content-Type', MT_MANIFEST)
        h.send_header('Content-Length', '1000')
        h.end_headers()
        time.sleep(20)
        return
    if mode == 'reg-bigmanifest':
        body = b'{"schemaVersion": 2, "x": "' + b'a' * MANIFEST_TOO_LARGE + b'"}'
        h.send(200, body, [('Content-Type', MT_MANIFEST)])
        return
    if mode == 'reg-schema1':
        h.send(200, json.dumps({'schemaVersion': 1, 'name': h.reg_repo_path, 'tag': ref,
                                'fsLayers': []}).encode(), [('Content-Type', MT_SCHEMA1)])
        return
    found = repo.get('manifests', {}).get(ref)
    if not found:
        h.send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}',
               [('Content-Type', 'application/json')])
        return
    body, mt = found
    if mode == 'reg-baddigest' and ref.startswith('sha256:'):
        body = body + b' '  # another digest than the one asked for
    h.send(200, body, [('Content-Type', mt), ('Docker-Content-Digest', digest(body))])


def reg_blob(h, mode, repo, ref):
    data = repo.get('blobs', {}).get(ref)
    if data is None:
        h.send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}',
               [('Content-Type', 'application/json')])
        return
    if mode == 'reg-redirect' and h.command == 'GET':
        h.send(307, b'', [('Location', '%s/%s' % (h.st().redirect_base, ref.split(':')[1]))])
        return
    validators = [('Docker-Content-Digest', ref), ('Content-Type', 'application/octet-stream')]
    if (mode == 'reg-cut' and h.command == 'GET' and len(data) > 1000 and
            h.requested_start() is None):  # no validator at all: the digest is the proof
        h.cut(data, validators, len(data) // 2)
        return
    if mode == 'reg-badblob' and h.command == 'GET' and len(data) > 1000:
        data = bytes(b ^ 0x01 for b in data)  # same size, other bytes
    h.serve_object(data, validators)


def reg_tags(h, name, repo, q):
    tags = repo.get('tags', [])
    n = int(q.get('n', ['100'])[0])
    last = q.get('last', [None])[0]
    start = tags.index(last) + 1 if last in tags else 0
    page = tags[start:start + n]
    headers = [('Content-Type', 'application/json')]
    if start + n < len(tags):
        headers.append(('Link', '</v2/%s/tags/list?n=%d&last=%s>; rel="next"' % (
            name, n, page[-1])))
    h.send(200, json.dumps({'name': name, 'tags': page}).encode(), headers)


def registry(h):
    u = urllib.parse.urlsplit(h.path)
    q = urllib.parse.parse_qs(u.query)
    h.record('registry', u.path)
    if u.path == '/token':
        reg_token(h, q)
        return
    if u.path == '/v2/':
        h.send(200, b'{}', [('Content-Type', 'application/json'),
                            ('Docker-Distribution-API-Version', 'registry/2.0')])
        return
    parts = u.path[len('/v2/'):].split('/')
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] in ('manifests', 'blobs', 'tags'):
            break
    else:
        h.not_found()
        return
    mode, name = parts[0], '/'.join(parts[:i])
    h.reg_repo_path = name
    repo = h.st().repos.get('/'.join(parts[1:i]), {})
    if not reg_auth_ok(h, mode):
        return
    kind, ref = parts[i], '/'.join(parts[i + 1:])
    if kind == 'manifests':
        reg_manifest(h, mode, repo, ref)
    elif kind == 'blobs':
        reg_blob(h, mode, repo, ref)
    else:
        reg_tags(h, name, repo, q)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, lifetime=600):
        super().__init__(('127.0.0.1', 0), Handler)  # loopback only, any free port
        self.state = State()
        self.lifetime = lifetime
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={'poll_interval': 0.1},
                                       daemon=True)
        # Bounded: whatever the driver does, the server ends after `lifetime` seconds.
        self.timer = threading.Timer(lifetime, self.stop)
        self.timer.daemon = True

    def handle_error(self, request, client_address):
        pass  # clients that hang up (thinimg cutting a stall or a body) are expected

    @property
    def port(self):
        return self.server_address[1]

    def start(self):
        self.thread.start()
        self.timer.start()
        return self

    def stop(self):
        self.stopping.set()
        self.timer.cancel()
        self.shutdown()
        self.server_close()

    def put(self, key, a, b=None):
        with self.state.lock:
            self.state.objects[key] = a
            if b is not None:
                self.state.objects_b[key] = b

    def put_image(self, repo, tags, blobs):
        """Registry: repo ('img') with tags {tag: manifest or index bytes}; every manifest
        is also served by its digest; blobs {digest: bytes} (manifests of an index too)."""
        with self.state.lock:
            r = self.state.repos.setdefault(repo, {'manifests': {}, 'blobs': {}, 'tags': []})
            for tag, body in tags.items():
                mt = json.loads(body).get('mediaType', MT_MANIFEST)
                r['manifests'][tag] = r['manifests'][digest(body)] = (body, mt)
                r['tags'].append(tag)
            for d, b in blobs.items():
                if b.startswith(b'{"schemaVersion"'):
                    r['manifests'][d] = (b, json.loads(b)['mediaType'])
                else:
                    r['blobs'][d] = b

    def count(self, *key):
        with self.state.lock:
            return self.state.counts.get(key, 0)

    def reset(self):
        with self.state.lock:
            self.state.counts.clear()
            self.state.changed.clear()
            self.state.requests.clear()

    def log(self):
        with self.state.lock:
            return list(self.state.requests)


def main():
    lifetime = 600
    if len(sys.argv) == 3 and sys.argv[1] == '--lifetime':
        lifetime = float(sys.argv[2])
    s = Server(lifetime).start()
    s.put('demo.tar', b'demo')
    print(s.port, flush=True)
    s.thread.join()


if __name__ == '__main__':
    main()
