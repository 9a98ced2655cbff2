#!/usr/bin/env python3
"""A client of the gridmeter node agent (docs/node-agent.md), Python standard library only.

As a module:
    from agent_client import Agent
    agent = Agent("/run/gridmeter/agent.sock")          # or Agent(port=9731) for the TCP port
    answer = agent.send([{"subject": "acme", "data": {"model": "m", "input_tokens": 5,
                          "cached_tokens": 0, "output_tokens": 7, "gpu_us": 0}}])
    # answer: {"accepted": 1, "rejected": 0, "durable": "spool", "seqs": [...]}

As a command (JSON lines on stdin, sent in batches; the answers' totals on stdout):
    python3 agent_client.py --socket /run/gridmeter/agent.sock --batch 100 < events.jsonl

The agent answers 429 with Retry-After when its spool is full: nothing of that request was
recorded, so the client waits and sends the same batch again. A connection that breaks after a
request was sent raises UnknownOutcome (the request may have been recorded; this client never
resends it by itself). Any other answer is final for that batch: what it lists under "errors" was not recorded (fix those events; do not send the
accepted ones again). Exit status: 0 when every event was accepted, 1 when some were refused,
2 on a usage or transport error.
"""
import argparse
import http.client
import json
import socket
import sys
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix domain socket (keep-alive, like any HTTPConnection)."""

    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class UnknownOutcome(Exception):
    """The connection broke after the request was sent: the agent may or may not have recorded
    it. Sending it again may count its events twice (see docs/node-agent.md, "When an answer
    is lost")."""


class Agent:
    IDLE_S = 60  # the agent closes a connection idle for 120 s: reconnect well before

    def __init__(self, socket_path=None, port=None, host="127.0.0.1", timeout=60):
        if socket_path:
            self.conn = UnixHTTPConnection(socket_path, timeout)
        else:
            self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.last_use = 0.0

    def post(self, path, body, content_type):
        """One request; returns (status, answer as a dict, Retry-After seconds or 0). Never sends
        a request twice by itself: a broken connection after sending raises UnknownOutcome."""
        if time.monotonic() - self.last_use > self.IDLE_S:
            self.conn.close()  # a fresh connection rather than one the agent may have closed
        try:
            self.conn.request("POST", path, body=body, headers={"Content-Type": content_type})
            resp = self.conn.getresponse()
            data = resp.read()
        except (ConnectionRefusedError, FileNotFoundError):
            self.conn.close()
            raise  # no agent listens (restarting?): nothing was sent, safe to send again
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            raise UnknownOutcome(f"{path}: {e}") from e
        self.last_use = time.monotonic()
        retry = int(resp.getheader("Retry-After") or 0)
        return resp.status, json.loads(data or b"{}"), retry

    def send(self, events, atomic=False, max_wait_s=3600):
        """Sends events (dicts or JSON texts) as one JSON-lines request. Waits out a full spool
        (429: nothing was recorded, the same batch is sent again)."""
        lines = [e if isinstance(e, str) else json.dumps(e, separators=(",", ":")) for e in events]
        body = ("\n".join(lines) + "\n").encode()
        path = "/v1/events?atomic=true" if atomic else "/v1/events"
        waited = 0.0
        while True:
            status, answer, retry = self.post(path, body, "application/x-ndjson")
            if status != 429:
                answer["status"] = status
                return answer
            if waited >= max_wait_s:
                answer["status"] = status
                return answer
            time.sleep(retry or 1)
            waited += retry or 1

    def steps(self, steps):
        """GPU steps (docs/node-agent.md, POST /v1/gpu/steps) as JSON lines."""
        body = ("\n".join(json.dumps(s, separators=(",", ":")) for s in steps) + "\n").encode()
        status, answer, _ = self.post("/v1/gpu/steps", body, "application/x-ndjson")
        answer["status"] = status
        return answer


def main():
    ap = argparse.ArgumentParser(description="send usage events (JSON lines on stdin) to a "
                                             "gridmeter node agent")
    ap.add_argument("--socket", help="the agent's Unix socket")
    ap.add_argument("--port", type=int, help="the agent's loopback TCP port (instead)")
    ap.add_argument("--batch", type=int, default=100, help="events per request")
    ap.add_argument("--atomic", action="store_true", help="all or nothing per request")
    args = ap.parse_args()
    if not args.socket and not args.port:
        ap.error("give --socket or --port")
    agent = Agent(args.socket, args.port)
    accepted = rejected = 0
    batch = []
    line_no = 0

    def flush():
        nonlocal accepted, rejected
        if not batch:
            return
        answer = agent.send([text for _, text in batch], atomic=args.atomic)
        accepted += answer.get("accepted", 0)
        rejected += answer.get("rejected", 0)
        for err in answer.get("errors", []):
            where = batch[err["index"]][0] if err.get("index", -1) < len(batch) else "?"
            print(f"line {where}: {err['field']}: {err['rule']}", file=sys.stderr)
        if "error" in answer:
            print(f"request: {answer['error']['field']}: {answer['error']['rule']}",
                  file=sys.stderr)
            rejected += len(batch) - answer.get("accepted", 0) - answer.get("rejected", 0)
        batch.clear()

    try:
        for line in sys.stdin:
            line_no += 1
            if line.strip():
                batch.append((line_no, line.rstrip("\n")))
            if len(batch) >= args.batch:
                flush()
        flush()
    except (OSError, UnknownOutcome) as e:
        print(f"agent_client: {e} (after {accepted} accepted events)", file=sys.stderr)
        return 2
    print(json.dumps({"accepted": accepted, "rejected": rejected}))
    return 0 if rejected == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
