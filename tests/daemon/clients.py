#!/usr/bin/env python3
"""clients.py: misbehaving clients and a slow server for the daemon's tests.

    clients.py half SOCKET SECONDS OUT      send half a request, stall; write to OUT how long
                                            the daemon took to close the connection ("never"
                                            if it did not within SECONDS)
    clients.py hangup SOCKET PATH DELAY     send a full GET PATH (a long poll), hang up after
                                            DELAY seconds without reading the answer
    clients.py slowserve DIR PORTFILE RATE  serve DIR over HTTP on 127.0.0.1 (random port
                                            written to PORTFILE), RATE bytes per second per
                                            response, with HEAD and Range support
"""
import http.server
import os
import socket
import sys
import time


def half(path, seconds, out):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(b'GET /v1/version HTTP/1.1\r\nHost: x\r\nX-Half: ')
    t0 = time.monotonic()
    s.settimeout(float(seconds))
    result = 'never'
    try:
        while True:
            data = s.recv(4096)
            if not data:
                result = '%.1f' % (time.monotonic() - t0)
                break
    except socket.timeout:
        pass
    except ConnectionResetError:
        result = '%.1f' % (time.monotonic() - t0)
    with open(out, 'w') as f:
        f.write(result + '\n')


def hangup(path, url, delay):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(('GET %s HTTP/1.1\r\nHost: x\r\n\r\n' % url).encode())
    time.sleep(float(delay))
    s.close()


class Slow(http.server.SimpleHTTPRequestHandler):
    rate = 1 << 20

    def log_message(self, *a):
        pass

    def copyfile(self, src, dst):
        chunk = max(1, self.rate // 10)
        try:
            while True:
                b = src.read(chunk)
                if not b:
                    return
                dst.write(b)
                dst.flush()
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a test killed it on purpose)


def slowserve(root, portfile, rate):
    Slow.rate = int(rate)
    os.chdir(root)
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Slow)
    with open(portfile + '.tmp', 'w') as f:
        f.write(str(srv.server_address[1]))
    os.rename(portfile + '.tmp', portfile)
    srv.serve_forever()


if __name__ == '__main__':
    cmd = sys.argv[1]
    if cmd == 'half':
        half(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == 'hangup':
        hangup(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == 'slowserve':
        slowserve(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit('unknown command ' + cmd)
