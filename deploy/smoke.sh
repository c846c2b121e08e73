#!/usr/bin/env bash
# The compose stack for real, as a new user runs it (needs Docker, Compose v2 or v1, python3).
# Not part of `make test`: it builds images and starts containers.
#
#   deploy/smoke.sh                                             # docker-compose.yml (CPU server)
#   deploy/smoke.sh -f docker-compose.yml -f docker-compose.gpu.yml
#   T2MIR_SMOKE_RESTART="server-1 server-2 server-3" \
#     deploy/smoke.sh -f docker-compose.yml -f docker-compose.scale.yml
#
# Steps: build, `up -d`, wait until every container is healthy, create a session and act over HTTP
# (one closed episode and a few steps of the next), restart the server container, wait for it,
# check the session kept its step and returns and that the next step is accepted (and a resent
# step answered the same), check Prometheus scraped the server, then `down -v`.
#
# Environment:
#   T2MIR_SMOKE_PROJECT   compose project name (default t2mir-smoke; its volumes are its own)
#   T2MIR_SMOKE_SERVICES  services to start (default: all), e.g. "redis server prometheus"
#   T2MIR_SMOKE_RESTART   services restarted mid-session (default server; the replicas when scaled out)
#   T2MIR_SMOKE_MODEL     model of the session (default darkroom-t2mir-ad)
#   T2MIR_SMOKE_TIMEOUT   seconds to wait for healthy containers (default 900: the first build
#                         downloads torch)
#   T2MIR_SMOKE_KEEP=1    leave the stack running at the end
# and the compose files' own variables (T2MIR_TORCH_INDEX, T2MIR_PUBLISH_PORT, ...).
set -euo pipefail
cd "$(dirname "$0")"

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    echo "smoke: neither \`docker compose\` nor \`docker-compose\` is installed" >&2
    exit 2
fi
command -v python3 >/dev/null || { echo "smoke: python3 is needed for the HTTP checks" >&2; exit 2; }

PROJECT=${T2MIR_SMOKE_PROJECT:-t2mir-smoke}
FILES=("$@")
[ ${#FILES[@]} -gt 0 ] || FILES=(-f docker-compose.yml)
read -r -a SERVICES <<<"${T2MIR_SMOKE_SERVICES:-}"
read -r -a RESTART <<<"${T2MIR_SMOKE_RESTART:-server}"
MODEL=${T2MIR_SMOKE_MODEL:-darkroom-t2mir-ad}
TIMEOUT=${T2MIR_SMOKE_TIMEOUT:-900}
API=http://127.0.0.1:${T2MIR_PUBLISH_PORT:-8000}
PROMETHEUS=http://127.0.0.1:9090
STATE=$(mktemp)

compose() { "${COMPOSE[@]}" -p "$PROJECT" "${FILES[@]}" "$@"; }
say() { printf '\n== smoke: %s\n' "$*"; }

finish() {
    local rc=$?
    if [ $rc -ne 0 ]; then
        say "FAILED (exit $rc); state and logs:"
        compose ps || true
        compose logs --tail 60 || true
    fi
    if [ "${T2MIR_SMOKE_KEEP:-0}" = 1 ]; then
        say "stack left running: ${COMPOSE[*]} -p $PROJECT ${FILES[*]} down -v"
    else
        compose down -v --remove-orphans || true
    fi
    rm -f "$STATE"
    [ $rc -eq 0 ] && say "PASSED"
    exit $rc
}
trap finish EXIT

wait_healthy() {
    # Every container of the project running, and healthy where it has a healthcheck.
    local deadline=$((SECONDS + TIMEOUT)) ids states
    while true; do
        ids=$(compose ps -q)
        states=$([ -z "$ids" ] || docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' $ids)
        if [ -n "$ids" ] && ! grep -qv -E ' running (healthy|none)$' <<<"$states"; then
            printf '%s\n' "$states"
            return 0
        fi
        if [ $SECONDS -ge $deadline ]; then
            printf '%s\n' "$states"
            echo "smoke: containers not healthy after ${TIMEOUT}s" >&2
            return 1
        fi
        sleep 3
    done
}

http() {
    # http PHASE: the session checks, in python3 (urllib only); state passes through $STATE.
    python3 - "$1" "$API" "$PROMETHEUS" "$MODEL" "$STATE" <<'PY'
import json, sys, time, urllib.error, urllib.parse, urllib.request

phase, api, prometheus, model, state_file = sys.argv[1:]


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def act(session, step, reward=None, done=False):
    body = {"step": step, "observation": [float(step % 9), float((step * 5) % 9)]}
    if reward is not None:
        body["reward"] = reward
    if done:
        body["done"] = True
    status, answer = call("POST", f"{api}/sessions/{session}/act", body)
    assert status == 200, f"act step {step}: {status} {answer}"
    assert answer["step"] == step, answer
    return answer


if phase == "before":
    status, models = call("GET", f"{api}/models")
    assert status == 200, models
    print("models:", sorted({m["name"] for m in models["models"]}))
    status, session = call("POST", f"{api}/sessions", {"model": model})
    assert status == 201, f"create: {status} {session}"
    sid = session["session_id"]
    for step in range(5):
        act(sid, step, reward=None if step == 0 else 1.0)
    closed = act(sid, 5, reward=1.0, done=True)
    for step in range(6, 9):
        act(sid, step, reward=None if step == 6 else 0.0)
    status, info = call("GET", f"{api}/sessions/{sid}")
    assert status == 200 and info["step"] == 9 and info["episode"] == 1, info
    print(f"session {sid}: 9 steps acted, episode 0 closed with return {closed['episode_return']}")
    json.dump({"session": sid, "returns": info["returns"]}, open(state_file, "w"))
elif phase == "after":
    state = json.load(open(state_file))
    sid = state["session"]
    status, info = call("GET", f"{api}/sessions/{sid}")
    assert status == 200, f"session lost after the restart: {status} {info}"
    assert info["step"] == 9 and info["episode"] == 1 and info["returns"] == state["returns"], info
    first = act(sid, 9, reward=1.0)
    again = act(sid, 9, reward=1.0)
    assert again["action"] == first["action"], (first, again)
    act(sid, 10, reward=0.0)
    status, info = call("GET", f"{api}/sessions/{sid}")
    assert status == 200 and info["step"] == 11 and info["returns"] == state["returns"], info
    print(f"session {sid} continued after the restart: steps 9-10 accepted, history kept {info['returns']}")
    status, _ = call("DELETE", f"{api}/sessions/{sid}")
    assert status == 204, status
elif phase == "prometheus":
    deadline = time.monotonic() + 90
    query = 'sum(t2mir_act_requests_total{job="t2mir-server",status="200"})'
    while True:
        up = call("GET", f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": 'up{job="t2mir-server"}'}))[1]
        acts = call("GET", f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query}))[1]
        targets = {r["metric"]["instance"]: r["value"][1] for r in up["data"]["result"]}
        served = [r["value"][1] for r in acts["data"]["result"]]
        if targets and all(v == "1" for v in targets.values()) and served and float(served[0]) > 0:
            print(f"prometheus: targets up {targets}, acts scraped {served[0]}")
            break
        assert time.monotonic() < deadline, f"prometheus: targets {targets}, acts {served}"
        time.sleep(2)
PY
}

say "compose: ${COMPOSE[*]} -p $PROJECT ${FILES[*]}"
compose config --services
say "build"
compose build
say "up -d ${SERVICES[*]:-(all services)}"
compose up -d "${SERVICES[@]}"
say "waiting for healthy containers (up to ${TIMEOUT}s)"
wait_healthy
say "session over HTTP"
http before
say "restart ${RESTART[*]}"
compose restart "${RESTART[@]}"
wait_healthy
say "the same session after the restart"
http after
say "Prometheus scraped the server"
http prometheus
