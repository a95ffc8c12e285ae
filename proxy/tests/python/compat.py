#!/usr/bin/env python3
"""Drives chaos-proxy with the unmodified `toxiproxy-python` client (PyPI, import name `toxiproxy`).

Usage: compat.py API_HOST:API_PORT UPSTREAM_HOST:UPSTREAM_PORT
   or: CHAOS_API=host:port CHAOS_UPSTREAM=host:port compat.py

UPSTREAM must be a TCP echo server. The script prints each step and exits non-zero with a clear
message on the first failure. Only the client library talks to the control API (its high-level
objects, plus its own `APIConsumer` for the one call it has no method for: updating a toxic);
the data path is checked with plain sockets.

Written against toxiproxy-python 0.1.1, which:
  - is configured through class attributes (`Toxiproxy().update_api_consumer(host, port)`);
  - creates proxies with POST /proxies (listen defaults to 127.0.0.1:0) after GET /proxies;
  - enables/disables with the legacy POST /proxies/{p} {"enabled": bool} and parses the body;
  - adds toxics with POST /proxies/{p}/toxics and parses the body;
  - maps 409 -> ProxyExists, 404 -> NotFound, 400 -> InvalidToxic;
  - treats any status < 400 as success for DELETE and POST /reset;
  - implements `populate` client-side (GET /proxies, DELETE, POST /proxies), not via /populate.
"""

import json
import os
import socket
import sys
import threading
import time

import toxiproxy
from toxiproxy import Proxy, Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

PAYLOAD = b"ping-through-chaos-proxy"
LATENCY_MS = 300
FAST_S = 0.25
IO_TIMEOUT_S = 5.0
DOWN_CYCLES = 20


class CompatFailure(Exception):
    pass


def step(msg):
    print("[compat] " + msg, flush=True)


def check(cond, msg):
    if not cond:
        raise CompatFailure(msg)


def expect_raises(exc_type, what, fn, *args, **kwargs):
    try:
        result = fn(*args, **kwargs)
    except exc_type as e:
        step("  %s raised %s as expected (%s)" % (what, exc_type.__name__, e))
        return
    except Exception as e:  # noqa: BLE001 - report whatever else came back
        raise CompatFailure("%s: expected %s, got %s: %r" % (what, exc_type.__name__, type(e).__name__, e))
    raise CompatFailure("%s: expected %s, but it returned %r" % (what, exc_type.__name__, result))


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    check(host and port.isdigit(), "not a host:port address: %r" % addr)
    return host, int(port)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(listen):
    sock = socket.create_connection(split_addr(listen), timeout=IO_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trip(sock, expect=PAYLOAD):
    """Sends PAYLOAD on an open socket, reads the reply back; returns the elapsed seconds."""
    start = time.monotonic()
    sock.sendall(PAYLOAD)
    got = b""
    while len(got) < len(PAYLOAD):
        chunk = sock.recv(len(PAYLOAD) - len(got))
        if not chunk:
            raise CompatFailure("connection closed after %d of %d echoed bytes" % (len(got), len(PAYLOAD)))
        got += chunk
    elapsed = time.monotonic() - start
    check(got == expect, "reply mismatch: sent %r, expected %r, got %r" % (PAYLOAD, expect, got))
    return elapsed


def fresh_round_trip(listen, expect=PAYLOAD):
    with connect(listen) as sock:
        return round_trip(sock, expect)


def start_upper_echo():
    """A second upstream, told apart from the first: it echoes bytes upper-cased."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve(conn):
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data.upper())

    def accept_loop():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return "127.0.0.1:%d" % srv.getsockname()[1]


def assert_fast(elapsed, what):
    check(elapsed < FAST_S, "%s: round trip took %.3fs, expected < %.2fs" % (what, elapsed, FAST_S))
    step("  %s: round trip %.3fs (< %.2fs)" % (what, elapsed, FAST_S))


def assert_slow(elapsed, what, at_least=LATENCY_MS / 1000.0):
    check(elapsed >= at_least, "%s: round trip took %.3fs, expected >= %.2fs" % (what, elapsed, at_least))
    step("  %s: round trip %.3fs (>= %.2fs)" % (what, elapsed, at_least))


def assert_refused(listen, what, quiet=False):
    """The API call that closed the listener has returned: Toxiproxy closes the listener before
    it answers, so the very next connect must be refused."""
    try:
        sock = socket.create_connection(split_addr(listen), timeout=IO_TIMEOUT_S)
    except ConnectionRefusedError:
        if not quiet:
            step("  %s: connection to %s refused" % (what, listen))
        return
    # Describe what the accepted connection then does, for the report.
    try:
        sock.sendall(PAYLOAD)
        data = sock.recv(4096)
        fate = "then it returned %r" % data if data else "then it was closed (EOF)"
    except OSError as e:
        fate = "then %s: %s" % (type(e).__name__, e)
    finally:
        sock.close()
    raise CompatFailure(
        "%s: connecting to %s right after the API call returned succeeded (%s), expected connection refused"
        % (what, listen, fate)
    )


def assert_cut(sock, what):
    """An open connection must be closed by the proxy (EOF or reset) within the I/O timeout."""
    try:
        sock.sendall(PAYLOAD)
    except OSError:
        step("  %s: open connection was cut (send failed)" % what)
        return
    try:
        data = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        step("  %s: open connection was cut (reset)" % what)
        return
    except socket.timeout:
        raise CompatFailure("%s: open connection still open after %.0fs, expected it cut" % (what, IO_TIMEOUT_S))
    check(data == b"", "%s: open connection still carried data %r, expected it cut" % (what, data))
    step("  %s: open connection was cut (EOF)" % what)


def toxic_summary(t):
    return {"name": t.name, "type": t.type, "stream": t.stream, "toxicity": t.toxicity, "attributes": t.attributes}


def main(argv):
    api = argv[1] if len(argv) > 1 else os.environ.get("CHAOS_API")
    upstream = argv[2] if len(argv) > 2 else os.environ.get("CHAOS_UPSTREAM")
    check(api and upstream, "usage: compat.py API_HOST:PORT UPSTREAM_HOST:PORT (or CHAOS_API / CHAOS_UPSTREAM)")
    api_host, api_port = split_addr(api)
    step("toxiproxy-python from %s; API %s; upstream echo %s" % (toxiproxy.__file__, api, upstream))

    server = Toxiproxy()
    server.update_api_consumer(api_host, api_port)

    step("running() / version()")
    check(server.running() is True, "running() returned %r, expected True" % server.running())
    version = server.version()
    check(isinstance(version, bytes) and version.strip(), "version() returned %r, expected a non-empty body" % version)
    step("  version body: %r" % version)

    step("start clean: destroy_all(), then proxies() is empty")
    server.destroy_all()
    check(server.proxies() == {}, "proxies() after destroy_all(): %r" % server.proxies())

    # --- create / list / get -------------------------------------------------------------
    step("create(upstream, name) with the client's default listen 127.0.0.1:0")
    proxy = server.create(upstream=upstream, name="compat_echo")
    check(isinstance(proxy, Proxy), "create() returned %r" % proxy)
    check(proxy.name == "compat_echo", "proxy.name = %r" % proxy.name)
    check(proxy.upstream == upstream, "proxy.upstream = %r, expected %r" % (proxy.upstream, upstream))
    check(proxy.enabled is True, "proxy.enabled = %r, expected True" % proxy.enabled)
    host, port = split_addr(proxy.listen)
    check(host == "127.0.0.1" and port != 0, "proxy.listen = %r, expected 127.0.0.1:<real port>" % proxy.listen)
    listen = proxy.listen
    step("  created %s listening on %s" % (proxy.name, listen))

    step("create() again with the same name -> ProxyExists (client-side check)")
    expect_raises(ProxyExists, "create(duplicate)", server.create, upstream=upstream, name="compat_echo")
    step("POST /proxies with an existing name through APIConsumer -> 409 -> ProxyExists")
    expect_raises(
        ProxyExists,
        "APIConsumer.post(/proxies, duplicate)",
        APIConsumer.post,
        "/proxies",
        json={"name": "compat_echo", "upstream": upstream, "listen": "127.0.0.1:0"},
    )

    step("proxies() / get_proxy()")
    proxies = server.proxies()
    check(list(proxies) == ["compat_echo"], "proxies() keys: %r" % list(proxies))
    listed = proxies["compat_echo"]
    check(
        (listed.name, listed.upstream, listed.listen, listed.enabled) == ("compat_echo", upstream, listen, True),
        "proxies()['compat_echo'] = %r" % vars(listed),
    )
    got = server.get_proxy("compat_echo")
    check(got is not None and got.listen == listen, "get_proxy('compat_echo') = %r" % (got and vars(got)))
    check(server.get_proxy("no_such_proxy") is None, "get_proxy('no_such_proxy') should be None")
    check(proxy.toxics() == {}, "new proxy has toxics: %r" % proxy.toxics())

    # --- traffic without toxics ------------------------------------------------------------
    step("round trip through the proxy without toxics")
    held = connect(listen)  # stays open across toxic changes
    assert_fast(round_trip(held), "held connection")
    assert_fast(fresh_round_trip(listen), "fresh connection")

    # --- latency toxic ---------------------------------------------------------------------
    step("add_toxic(type=latency, latency=%d ms) with the client's defaults (name, stream, toxicity)" % LATENCY_MS)
    proxy.add_toxic(type="latency", attributes={"latency": LATENCY_MS, "jitter": 0})
    toxics = proxy.toxics()
    check(list(toxics) == ["latency_downstream"], "toxics() keys: %r" % list(toxics))
    t = toxics["latency_downstream"]
    summary = toxic_summary(t)
    check(
        (t.type, t.stream, float(t.toxicity)) == ("latency", "downstream", 1.0)
        and t.attributes.get("latency") == LATENCY_MS
        and t.attributes.get("jitter") == 0,
        "toxics()['latency_downstream'] = %r" % summary,
    )
    step("  toxics(): %s" % json.dumps(summary, sort_keys=True))
    got = proxy.get_toxic("latency_downstream")
    check(got is not None and got.attributes.get("latency") == LATENCY_MS, "get_toxic() = %r" % (got and vars(got)))
    check(proxy.get_toxic("nope") is None, "get_toxic('nope') should be None")
    assert_slow(round_trip(held), "held connection (opened before the toxic)")
    assert_slow(fresh_round_trip(listen), "fresh connection")

    step("add_toxic() with the same name again -> 409 -> ProxyExists")
    expect_raises(
        ProxyExists,
        "add_toxic(duplicate)",
        proxy.add_toxic,
        type="latency",
        attributes={"latency": LATENCY_MS},
    )
    step("add_toxic() with an unknown type -> 400 -> InvalidToxic")
    expect_raises(InvalidToxic, "add_toxic(type=no_such_toxic)", proxy.add_toxic, type="no_such_toxic")
    step("add_toxic() with a bad stream -> 400 -> InvalidToxic")
    expect_raises(
        InvalidToxic, "add_toxic(stream=sideways)", proxy.add_toxic, type="latency", stream="sideways", name="bad_stream"
    )

    step("add_toxic(name, stream=upstream, toxicity=0.0): listed but never fires")
    proxy.add_toxic(
        type="latency", name="never_fires", stream="upstream", toxicity=0.0, attributes={"latency": 2000}
    )
    toxics = proxy.toxics()
    check(sorted(toxics) == ["latency_downstream", "never_fires"], "toxics() keys: %r" % sorted(toxics))
    t = toxics["never_fires"]
    check(
        (t.stream, float(t.toxicity), t.attributes.get("latency")) == ("upstream", 0.0, 2000),
        "toxics()['never_fires'] = %r" % toxic_summary(t),
    )
    with connect(listen) as sock:
        elapsed = round_trip(sock)
    check(elapsed < 1.5, "toxicity 0.0 toxic fired: round trip %.3fs" % elapsed)
    assert_slow(elapsed, "fresh connection with the 0.0 toxic present")
    check(proxy.destroy_toxic("never_fires") is True, "destroy_toxic('never_fires') returned False")

    # The client has no method to update a toxic; its APIConsumer does the legacy POST.
    step("update the toxic (legacy POST /proxies/{p}/toxics/{t} through APIConsumer): latency -> 500")
    r = APIConsumer.post("/proxies/compat_echo/toxics/latency_downstream", json={"attributes": {"latency": 500}})
    check(r.status_code == 200, "update toxic: HTTP %d %r" % (r.status_code, r.content))
    body = r.json()
    check(body.get("attributes", {}).get("latency") == 500, "update toxic response: %r" % body)
    t = proxy.get_toxic("latency_downstream")
    check(
        t.attributes.get("latency") == 500 and t.attributes.get("jitter") == 0,
        "after update, toxics() shows %r (expected latency 500, jitter kept at 0)" % toxic_summary(t),
    )
    assert_slow(round_trip(held), "held connection after update", at_least=0.5)
    step("update it back to %d ms" % LATENCY_MS)
    APIConsumer.post("/proxies/compat_echo/toxics/latency_downstream", json={"attributes": {"latency": LATENCY_MS}})

    # --- remove the toxic ------------------------------------------------------------------
    step("destroy_toxic('latency_downstream')")
    check(proxy.destroy_toxic("latency_downstream") is True, "destroy_toxic returned False")
    check(proxy.toxics() == {}, "toxics() after destroy_toxic: %r" % proxy.toxics())
    assert_fast(round_trip(held), "held connection after removal")
    assert_fast(fresh_round_trip(listen), "fresh connection after removal")
    step("destroy_toxic() of a missing toxic -> 404 -> NotFound")
    expect_raises(NotFound, "destroy_toxic('latency_downstream') again", proxy.destroy_toxic, "latency_downstream")

    # --- disable / enable ------------------------------------------------------------------
    step("disable(): listener closed, open connections cut")
    proxy.disable()
    check(proxy.enabled is False, "proxy.enabled after disable() = %r" % proxy.enabled)
    check(server.get_proxy("compat_echo").enabled is False, "proxies() still shows the proxy enabled")
    assert_refused(listen, "while disabled")
    assert_cut(held, "disable()")
    held.close()
    step("enable(): same address accepts again")
    proxy.enable()
    check(proxy.enabled is True, "proxy.enabled after enable() = %r" % proxy.enabled)
    check(server.get_proxy("compat_echo").enabled is True, "proxies() still shows the proxy disabled")
    assert_fast(fresh_round_trip(listen), "after enable()")

    step("with proxy.down(): refused inside, back after")
    with proxy.down():
        assert_refused(listen, "inside down()")
        check(server.get_proxy("compat_echo").enabled is False, "proxies() shows enabled inside down()")
    assert_fast(fresh_round_trip(listen), "after down()")
    step("with proxy.down() x%d: the first connect inside is refused every time" % DOWN_CYCLES)
    for i in range(DOWN_CYCLES):
        with proxy.down():
            assert_refused(listen, "inside down() (cycle %d of %d)" % (i + 1, DOWN_CYCLES), quiet=True)
        fresh_round_trip(listen)
    step("  refused %d times out of %d" % (DOWN_CYCLES, DOWN_CYCLES))

    # --- reset -----------------------------------------------------------------------------
    step("reset(): re-enables proxies and removes toxics")
    proxy.add_toxic(type="latency", attributes={"latency": LATENCY_MS})
    proxy.disable()
    check(server.reset() is True, "reset() returned False")
    after = server.get_proxy("compat_echo")
    check(after.enabled is True, "after reset() the proxy is still disabled")
    check(proxy.toxics() == {}, "after reset() toxics remain: %r" % proxy.toxics())
    assert_fast(fresh_round_trip(listen), "after reset()")

    # --- create disabled -------------------------------------------------------------------
    step("create(enabled=False, listen=<free port>) then enable()")
    cold_listen = "127.0.0.1:%d" % free_port()
    cold = server.create(upstream=upstream, name="compat_cold", listen=cold_listen, enabled=False)
    check(cold.enabled is False, "create(enabled=False).enabled = %r" % cold.enabled)
    check(cold.listen == cold_listen, "create(listen=%s).listen = %r" % (cold_listen, cold.listen))
    assert_refused(cold_listen, "created disabled")
    cold.enable()
    assert_fast(fresh_round_trip(cold_listen), "created disabled, then enabled")

    # --- populate (client-side) ------------------------------------------------------------
    step("populate(): creates missing proxies, keeps identical ones, recreates changed ones")
    pop_listen = "127.0.0.1:%d" % free_port()
    spec = [
        {"name": "compat_cold", "upstream": upstream, "listen": cold_listen},
        {"name": "compat_pop", "upstream": upstream, "listen": pop_listen},
    ]
    created = server.populate(spec)
    check([p.name for p in created] == ["compat_pop"], "populate() created %r" % [p.name for p in created])
    check(sorted(server.proxies()) == ["compat_cold", "compat_echo", "compat_pop"], "proxies(): %r" % sorted(server.proxies()))
    assert_fast(fresh_round_trip(pop_listen), "populated proxy")
    check(server.populate(spec) == [], "populate() of an unchanged spec created proxies again")
    pop_listen2 = "127.0.0.1:%d" % free_port()
    created = server.populate([{"name": "compat_pop", "upstream": upstream, "listen": pop_listen2}])
    check(
        [(p.name, p.listen) for p in created] == [("compat_pop", pop_listen2)],
        "populate() with a changed listen: %r" % [(p.name, p.listen) for p in created],
    )
    assert_refused(pop_listen, "old address of the re-populated proxy")
    assert_fast(fresh_round_trip(pop_listen2), "re-populated proxy")
    upper = start_upper_echo()
    step("populate() with a changed upstream (%s, upper-casing echo) on the same listen address" % upper)
    created = server.populate([{"name": "compat_pop", "upstream": upper, "listen": pop_listen2}])
    check(
        [(p.name, p.upstream, p.listen) for p in created] == [("compat_pop", upper, pop_listen2)],
        "populate() with a changed upstream: %r" % [(p.name, p.upstream, p.listen) for p in created],
    )
    assert_fast(fresh_round_trip(pop_listen2, expect=PAYLOAD.upper()), "re-populated proxy, new upstream")

    # --- destroy ---------------------------------------------------------------------------
    step("destroy(proxy) / proxy.destroy()")
    check(server.destroy(proxy) is True, "destroy(proxy) returned False")
    check(server.destroy("compat_echo") is False, "destroy(non-Proxy) should be False")
    check("compat_echo" not in server.proxies(), "proxies() still lists compat_echo")
    assert_refused(listen, "after destroy()")
    step("operations on a destroyed proxy -> 404 -> NotFound")
    expect_raises(NotFound, "toxics() of a destroyed proxy", proxy.toxics)
    expect_raises(NotFound, "destroy() of a destroyed proxy", proxy.destroy)
    expect_raises(NotFound, "add_toxic() on a destroyed proxy", proxy.add_toxic, type="latency")
    expect_raises(NotFound, "enable() of a destroyed proxy", proxy.enable)

    step("destroy_all()")
    server.destroy_all()
    check(server.proxies() == {}, "proxies() after destroy_all(): %r" % server.proxies())
    assert_refused(cold_listen, "after destroy_all()")
    assert_refused(pop_listen2, "after destroy_all()")

    step("OK: toxiproxy-python works unchanged against chaos-proxy")


if __name__ == "__main__":
    try:
        main(sys.argv)
    except CompatFailure as e:
        print("[compat] FAILED: %s" % e, file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - anything else the client raised is a failure too
        import traceback

        traceback.print_exc()
        print("[compat] FAILED with %s: %s" % (type(e).__name__, e), file=sys.stderr, flush=True)
        sys.exit(1)
