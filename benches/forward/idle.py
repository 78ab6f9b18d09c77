"""Opens N idle TCP connections to ADDR:PORT, prints "open" and holds them
until stdin closes. Used by compare.sh to measure memory per idle connection."""
import socket
import sys

host, port = sys.argv[1].rsplit(":", 1)
n = int(sys.argv[2])
conns = []
for _ in range(n):
    s = socket.create_connection((host, int(port)), timeout=10)
    conns.append(s)
print("open", flush=True)
sys.stdin.read()
