# One HTTPS exchange with the licensing service, as a reader's tool would make it (Python's ssl,
# TLS 1.2+, the fixture CA, an optional client certificate). Prints the status line, the body
# and the TLS version, one per line.
# Arguments: port ca cert key method path authorization body (empty strings for none).
import socket, ssl, sys

port, ca, cert, key, method, path, auth, body = sys.argv[1:9]
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
if cert:
    ctx.load_cert_chain(cert, key)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))), server_hostname="mx.contoso.test")
payload = body.encode()
head = "%s %s HTTP/1.1\r\nHost: mx.contoso.test\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n" % (method, path, len(payload))
if auth:
    head += "Authorization: %s\r\n" % auth
s.sendall(head.encode() + b"\r\n" + payload)
data = b""
while True:
    try:
        chunk = s.recv(65536)
    except (ssl.SSLError, ConnectionResetError):
        break
    if not chunk:
        break
    data += chunk
print(data.split(b"\r\n", 1)[0].decode())
print(data.split(b"\r\n\r\n", 1)[1].decode() if b"\r\n\r\n" in data else "")
print(s.version())
