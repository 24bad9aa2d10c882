# An MTA-STS policy host for tests: Python's http.server over ssl on ADDRESS:443, answering
# GET /.well-known/mta-sts.txt from files in DIR (status, ctype, body) read at each request, so
# a test can change the answer; each request's path is appended to DIR/log.
# Arguments: address certificate key dir
import http.server, os, ssl, sys

addr, cert, key, d = sys.argv[1:5]

def read(name, mode="r"):
    with open(os.path.join(d, name), mode) as f:
        return f.read()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with open(os.path.join(d, "log"), "a") as f:
            f.write(self.path + "\n")
        status, ctype, body = int(read("status")), read("ctype"), read("body", "rb")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if 300 <= status < 400:
            self.send_header("Location", "https://elsewhere.example/.well-known/mta-sts.txt")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer((addr, 443), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
