#!/usr/bin/env bash
# The main job: deploy the reference stack into a local throw-away VM (a
# systemd container with its own Docker engine) on a fresh Debian machine
# (root), then print where it answers.
#
#   scripts/demo.sh          build the test bed, start the VM, deploy, check
#   scripts/demo.sh down     remove the VM
set -Eeuo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

VM=${VMSTACK_DEMO_VM:-vmstack-demo}
# The local inventory's vault is encrypted with this documented, demo-only
# password. Real inventories use their own (see README).
vault_pass() { printf '%s\n' vmstack-demo; }

if [ "${1:-up}" = down ]; then
  tooling >/dev/null
  ansible-playbook tests/bed/vm.yml -e bed_vm_name="$VM" -e bed_vms_state=absent
  exit 0
fi

stage setup host_packages curl
stage tooling tooling
stage bed bash tests/bed/testbed.sh all
stage vm ansible-playbook tests/bed/vm.yml -e bed_vm_name="$VM"
stage deploy ansible-playbook -i inventories/local playbooks/deploy.yml --limit "$VM" \
  --vault-password-file <(vault_pass)

ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$VM")
check() {
  curl -fsS "http://$ip:8001/ready" && echo &&
    curl -fsS -X POST -H 'Content-Type: application/json' \
      -d '{"input": "How many words are in this sentence?"}' "http://$ip:8001/v1/agent/invoke" && echo
}
stage check check
stage_report
cat <<TXT

The reference stack answers on the VM "$VM" ($ip):
  API replicas   http://$ip:8001  http://$ip:8002   (/health /ready /metrics /v1/agent/invoke /v1/agent/stream)
  Compose        docker exec -it $VM docker compose --project-directory /opt/agent ps
  Remove it      scripts/demo.sh down
TXT
