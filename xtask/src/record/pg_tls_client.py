"""A small PostgreSQL client over TLS that writes a TLS key log (Python's
ssl module, SSLContext.keylog_filename). Used by `cargo xtask record` to
stage logins pgreach can decrypt. Trust, cleartext and md5 authentication.

usage: pg_tls_client.py HOST PORT USER DATABASE PASSWORD TLS CIPHERS KEYLOG
  TLS: 1.2 or 1.3 (the highest version offered); CIPHERS: OpenSSL's TLS 1.2
  cipher list, or '-' for the default.
Prints `ok` after a query, or `error SQLSTATE message`.
"""

import hashlib
import socket
import ssl
import struct
import sys


def message(tag, body):
    return tag + struct.pack("!I", len(body) + 4) + body


def read_message(conn):
    header = read_exactly(conn, 5)
    length = struct.unpack("!I", header[1:])[0]
    return header[:1], read_exactly(conn, length - 4)


def read_exactly(conn, n):
    data = b""
    while len(data) < n:
        piece = conn.recv(n - len(data))
        if not piece:
            raise ConnectionError("the server closed the connection")
        data += piece
    return data


def error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1].decode()] = part[1:].decode(errors="replace")
    return fields


def main():
    host, port, user, database, password, version, ciphers, keylog = sys.argv[1:9]
    raw = socket.create_connection((host, int(port)), timeout=5)
    raw.sendall(struct.pack("!II", 8, 80877103))
    if raw.recv(1) != b"S":
        print("error no-ssl the server refused TLS")
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.keylog_filename = keylog
    if version == "1.2":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers != "-":
        context.set_ciphers(ciphers)
    conn = context.wrap_socket(raw)
    params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0"
    params += b"application_name\0keylog-client\0\0"
    conn.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
    while True:
        tag, body = read_message(conn)
        if tag == b"R":
            code = struct.unpack("!I", body[:4])[0]
            if code == 3:
                conn.sendall(message(b"p", password.encode() + b"\0"))
            elif code == 5:
                inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                conn.sendall(message(b"p", b"md5" + outer.encode() + b"\0"))
            elif code != 0:
                print(f"error unsupported authentication request {code}")
                return
        elif tag == b"E":
            fields = error_fields(body)
            print(f"error {fields.get('C', '?')} {fields.get('M', '')}")
            conn.close()
            return
        elif tag == b"Z":
            break
    conn.sendall(message(b"Q", b"select 1\0"))
    while read_message(conn)[0] != b"Z":
        pass
    conn.sendall(message(b"X", b""))
    conn.close()
    print("ok")


main()
