#!/usr/bin/env bash
# The kind end-to-end test: the whole story on a real (kind) cluster. Needs docker, kind, kubectl, helm.
# It cannot run on the development machines (no Docker engine, no cluster): it is written to be correct
# by construction and is meant for users' machines and a CI with Docker.
#
#   e2e/run.sh            create the cluster, run everything, keep the cluster
#   KEEP=0 e2e/run.sh     delete the cluster at the end
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=socialnet
NS=socialnet-e2e
IMAGE=socialnet:e2e
step() { printf '\n== %s\n' "$*"; }
fail() { echo "E2E FAILED: $*" >&2; kubectl -n "$NS" get all,socialclusters,events 2>/dev/null | tail -50 >&2; exit 1; }
wait_for() { # description, timeout seconds, command...
  local what=$1 limit=$2; shift 2
  for _ in $(seq 1 "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  fail "timed out waiting for $what"
}

step "kind cluster"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config kind-config.yaml
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -

step "image"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "operator (chart) and CRD"
helm upgrade --install socialnet-operator charts/socialnet-operator -n "$NS" \
  --set image.repository=socialnet --set image.tag=e2e --set image.pullPolicy=Never --wait

step "an invalid SocialCluster is refused by the CRD's rules"
if sed 's/maxReplicas: 6/maxReplicas: 1/' examples/full.yaml | kubectl -n "$NS" apply --dry-run=server -f - 2>/tmp/e2e-invalid; then
  fail "min > max was accepted"
fi
grep -q "minReplicas must not exceed maxReplicas" /tmp/e2e-invalid || fail "no clear reason: $(cat /tmp/e2e-invalid)"

step "stores"
kubectl -n "$NS" apply -f e2e/stores.yaml
kubectl -n "$NS" wait --for=condition=Available deploy --all --timeout=300s
kubectl -n "$NS" exec deploy/mongodb -- mongosh --quiet --eval \
  'try { rs.status() } catch (e) { rs.initiate({_id: "rs0", members: [{_id: 0, host: "mongodb:27017"}]}) }'

step "the full SocialCluster"
kubectl -n "$NS" apply -f examples/secrets.yaml
sed "s|image: socialnet:dev|image: $IMAGE|; s|imagePullPolicy: IfNotPresent|imagePullPolicy: Never|" examples/full.yaml \
  | kubectl -n "$NS" apply -f -
wait_for "phase Available" 300 sh -c "kubectl -n $NS get sc social -o jsonpath='{.status.phase}' | grep -qx Available"
kubectl -n "$NS" get socialclusters | tee /tmp/e2e-get
for col in PHASE PRIMARY READY REBUILD AGE; do grep -q "$col" /tmp/e2e-get || fail "column $col missing"; done

step "post and read through the gateway's Service"
kubectl -n "$NS" port-forward svc/social-gateway 18080:8080 >/dev/null 2>&1 &
PF=$!; trap 'kill $PF 2>/dev/null || true' EXIT
wait_for "gateway port-forward" 30 curl -sf localhost:18080/healthz
SECRET=$(kubectl -n "$NS" get secret socialnet-auth -o jsonpath='{.data.jwt-secret}' | base64 -d)
TOKEN=$(kubectl -n "$NS" exec deploy/social-write-api -- env SOCIALNET_JWT_SECRET="$SECRET" socialnet token --sub alice)
H="Authorization: Bearer $TOKEN"
curl -sf -XPOST localhost:18080/v1/users -H "$H" -H 'content-type: application/json' -d '{"handle":"alice","display_name":"Alice"}'
POST=$(curl -sf -XPOST localhost:18080/v1/posts -H "$H" -H 'content-type: application/json' -d '{"body":"hello from kind"}' \
  | sed 's/.*"post_id":"\([^"]*\)".*/\1/')
wait_for "the post in alice's home" 60 sh -c "curl -sf localhost:18080/v1/users/alice/home -H '$H' | grep -q $POST"

step "kill the primary Redis: failover within the policy"
START=$(date +%s)
kubectl -n "$NS" delete pod -l app=redis-primary --wait=false
kubectl -n "$NS" scale deploy/redis-primary --replicas=0
wait_for "currentPrimary standby" 60 sh -c "kubectl -n $NS get sc social -o jsonpath='{.status.currentPrimary}' | grep -qx standby"
echo "failover took $(( $(date +%s) - START )) s"
curl -sf localhost:18080/v1/users/alice/home -H "$H" | grep -q "$POST" || fail "reads broken after failover"
kubectl -n "$NS" get events --field-selector involvedObject.name=social | grep -q FailoverCompleted || fail "no FailoverCompleted event"
kubectl -n "$NS" scale deploy/redis-primary --replicas=1

step "rebuild token -> Job -> Rebuilding -> done"
kubectl -n "$NS" patch sc social --type merge -p '{"spec":{"rebuild":{"target":"primary","token":"e2e-1"}}}'
wait_for "a rebuild job" 60 sh -c "kubectl -n $NS get jobs -l socialnet.io/rebuild-target=primary -o name | grep -q job"
wait_for "rebuild Succeeded" 600 sh -c "kubectl -n $NS get sc social -o jsonpath='{.status.rebuild.phase}' | grep -qx Succeeded"
kubectl -n "$NS" exec deploy/social-projector -- socialnet projector verify --target primary || fail "verify found differences"

step "status summary"
kubectl -n "$NS" exec deploy/socialnet-operator -- socialnet-operator status social -n "$NS" || true

echo "E2E PASSED"
if [ "${KEEP:-1}" = 0 ]; then kind delete cluster --name "$CLUSTER"; fi
