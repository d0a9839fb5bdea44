{{/*
Every call the operator makes, and nothing more. tests/binary.rs checks these rules against the calls the
operator really made in its binary-level test, so a new call without a rule fails there.
*/}}
{{- define "socialnet-operator.rules" -}}
- apiGroups: ["socialnet.io"]
  resources: ["socialclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["socialnet.io"]
  resources: ["socialclusters/status"]
  verbs: ["get", "patch"]
# Owner references with blockOwnerDeletion need update on the owner's finalizers.
- apiGroups: ["socialnet.io"]
  resources: ["socialclusters/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The JWT secret, to sign the operator's own admin token for the pods' admin endpoints (read, never listed).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# The read API and projector pods, found through their Services' EndpointSlices.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{- define "socialnet-operator.leaderRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}
