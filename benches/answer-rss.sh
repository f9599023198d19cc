#!/bin/bash
# Peak RSS of a fresh gateway serving one large answer (issue 19.1), streamed and sync, with
# `[server] max_answer_bytes` at its default (8 MiB) and at 1 GiB (≈ unbounded, as before the
# bound existed). Usage: benches/answer-rss.sh [BINARY] [ANSWER_BYTES]
set -euo pipefail
BIN=${1:-target/release/agentgate}
SIZE=${2:-$((100 << 20))}
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$DIR"' EXIT
BACKEND_PORT=18999

# A chatbase (ui-message) backend: SIZE bytes of 4 KiB text deltas, then a finish.
cat > "$DIR/backend.py" <<'PY'
import socket, sys, threading
port, total = int(sys.argv[1]), int(sys.argv[2])
block = ('data: {"type":"text-delta","id":"t","delta":"' + 'x' * 4096 + '"}\n\n').encode() * 16
def serve(c):
    buf = b''
    while b'\r\n\r\n' not in buf:
        d = c.recv(65536)
        if not d: return
        buf += d
    head, rest = buf.split(b'\r\n\r\n', 1)
    n = next((int(l.split(b':')[1]) for l in head.split(b'\r\n')
              if l.lower().startswith(b'content-length:')), 0)
    while len(rest) < n:
        rest += c.recv(65536)
    try:
        c.sendall(b'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n'
                  b'data: {"type":"start"}\n\ndata: {"type":"text-start","id":"t"}\n\n')
        sent = 0
        while sent < total:
            c.sendall(block); sent += 4096 * 16
        c.sendall(b'data: {"type":"text-end","id":"t"}\n\n'
                  b'data: {"type":"finish","messageMetadata":{"usage":{"credits":1}}}\n\ndata: [DONE]\n\n')
    except OSError:
        pass
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', port)); s.listen(16)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
python3 "$DIR/backend.py" $BACKEND_PORT "$SIZE" &
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$BACKEND_PORT) 2>/dev/null && break; sleep 0.1; done

for MAX in 8388608 1073741824; do
  mkdir -p "$DIR/$MAX"
  cat > "$DIR/$MAX/gw.toml" <<EOT
[server]
listen = "127.0.0.1:18081"
max_answer_bytes = $MAX
watch_config = false

[[front]]
api = "chatbase"
prefix = "/chatbase"

[[agent]]
id = "big"
upstream = "http://127.0.0.1:$BACKEND_PORT"
upstream_api = "chatbase"
idle_timeout_ms = 60000

[store]
url = "sqlite://$DIR/$MAX/agentgate.db"
EOT
  STORE="sqlite://$DIR/$MAX/agentgate.db"
  KEY=$("$BIN" keys create --store "$STORE" --account m --kind master | awk '/^key:/{print $2}')
  "$BIN" credits grant --store "$STORE" --account m --credits 1000 > /dev/null
  for MODE in true false; do
    RUST_LOG=warn "$BIN" serve --config "$DIR/$MAX/gw.toml" > "$DIR/gw.log" 2>&1 &
    G=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:18081/healthz && break; sleep 0.1; done
    BEFORE=$(awk '/VmRSS/{print $2}' /proc/$G/status)
    GOT=$(curl -s -N -o /dev/null -w '%{http_code} %{size_download}' \
      -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
      -d "{\"message\":\"hi\",\"stream\":$MODE}" http://127.0.0.1:18081/chatbase/api/v2/agents/big/chat)
    PEAK=$(awk '/VmHWM/{print $2}' /proc/$G/status)
    echo "max_answer_bytes=$MAX stream=$MODE answer=[$GOT] rss_before=$((BEFORE / 1024)) MiB peak=$((PEAK / 1024)) MiB"
    kill $G; wait $G 2>/dev/null || true
  done
done
