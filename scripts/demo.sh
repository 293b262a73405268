#!/usr/bin/env bash
# The main job: deploy the reference stack into a local throw-away VM (a
# systemd container with sshd and its own Docker engine) on a fresh Debian
# machine (root) with the shipped playbooks/deploy.yml, over SSH as an
# operator would, then print the HTTPS URL where it answers.
#
#   scripts/demo.sh              build the test bed, start the VM, deploy, check
#   scripts/demo.sh --multihost  the same with five VMs: a load balancer, two
#                                app hosts, a data host and a monitoring host
#   scripts/demo.sh down         remove the VMs (either layout)
set -Eeuo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

VM=vmstack-demo
ADDRESS=172.30.99.10
NAME=agent.vmstack.test
DEMO=build/demo
# The operators' settings (SSH multiplexing, pipelining, facts once per run).
export ANSIBLE_CONFIG=$ROOT/inventories/example/ansible.cfg
# The local inventory's vault is encrypted with this documented, demo-only
# password. Real inventories use their own (see README).
vault_pass() { printf '%s\n' vmstack-demo; }

LAYOUT=one INVENTORY=inventories/local/hosts.yml
case ${1:-up} in
  up) ;;
  --multihost) LAYOUT=multihost INVENTORY=inventories/local/multihost.yml ;;
  down)
    tooling >/dev/null
    for layout in one multihost; do ansible-playbook tests/bed/vm.yml -e bed_vms_state=absent -e bed_layout=$layout; done
    rm -f "$DEMO/known_hosts"
    exit 0 ;;
  *) echo "usage: $0 [--multihost | down]" >&2; exit 2 ;;
esac

# The demo's SSH key, and a CA with the certificate nginx serves for $NAME.
demo_files() {
  mkdir -p "$DEMO" && cd "$DEMO" || return 1
  [ -s id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -C vmstack-demo -f id_ed25519
  if [ ! -s ca.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -keyout ca.key -out ca.pem \
      -subj "/CN=vmstack demo CA" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    rm -f agent.crt
  fi
  if [ ! -s agent.crt ]; then
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout agent.key -out agent.csr -subj "/CN=$NAME" 2>/dev/null
    openssl x509 -req -in agent.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 90 -out agent.crt \
      -extfile <(printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$NAME") 2>/dev/null
    rm -f agent.csr
  fi
  chmod 0600 id_ed25519 ca.key agent.key
  cd "$ROOT"
}

# The demo network's fixed subnet must not overlap another Docker network
# (Docker hands out 172.17-31.0.0/16 to networks made without a subnet, such
# as a Molecule scenario's) nor a route of this machine: say which, before
# anything starts.
SUBNET=172.30.99.0/24
network_free() {
  local docker_nets
  docker_nets=$(docker network ls -q | xargs -r docker network inspect \
    -f '{{.Name}} {{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null) || return 1
  python3 - "$SUBNET" "$VM" "$docker_nets" "$(ip -4 -o route show 2>/dev/null)" <<'PY'
import ipaddress, sys
subnet, demo, docker_nets, routes = ipaddress.ip_network(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
clashes = []
for line in docker_nets.splitlines():
    name, *nets = line.split()
    if name == demo:
        continue
    clashes += [f"the Docker network {name} ({n}): docker network rm {name}, once nothing uses it"
                for n in nets if ":" not in n and ipaddress.ip_network(n, strict=False).overlaps(subnet)]
for line in routes.splitlines():
    dest, dev = line.split()[0], line.split("dev ")[-1].split()[0] if "dev " in line else ""
    if dest != "default" and not dev.startswith(("docker", "br-")) \
            and ipaddress.ip_network(dest, strict=False).overlaps(subnet):
        clashes.append(f"this machine's route to {dest} (dev {dev})")
if clashes:
    sys.exit(f"demo: the demo network {subnet} overlaps " + "; ".join(clashes))
PY
}

vm() {
  network_free || return 1
  # A new VM has new host keys. (The two layouts share the load balancer's address.)
  local other=multihost
  [ "$LAYOUT" = one ] || other=one
  ansible-playbook tests/bed/vm.yml -e bed_vms_state=absent -e bed_layout=$other >/dev/null
  docker container inspect "$VM$([ "$LAYOUT" = one ] || echo -lb)" >/dev/null 2>&1 || rm -f "$DEMO/known_hosts"
  ansible-playbook tests/bed/vm.yml -e bed_layout=$LAYOUT
}

curl_tls() { curl -fsS --cacert "$DEMO/ca.pem" --resolve "$NAME:443:$ADDRESS" "$@"; }
check() {
  curl_tls "https://$NAME/ready" && echo &&
    curl_tls -X POST -H 'Content-Type: application/json' \
      -d '{"input": "How many words are in this sentence?"}' "https://$NAME/v1/agent/invoke" && echo
}

stage setup host_packages curl openssh-client openssl
stage tooling tooling
stage bed bash tests/bed/testbed.sh all
stage files demo_files
stage vm vm
stage deploy ansible-playbook -i $INVENTORY playbooks/deploy.yml --vault-password-file <(vault_pass)
stage check check
stage_report
SSH="ssh -i $DEMO/id_ed25519 -o UserKnownHostsFile=$DEMO/known_hosts"
if [ "$LAYOUT" = one ]; then
  cat <<TXT

The reference stack answers over HTTPS on the VM "$VM" ($ADDRESS), behind nginx:
  curl --cacert $DEMO/ca.pem --resolve $NAME:443:$ADDRESS https://$NAME/ready
  https://$NAME/   (/ready /v1/agent/invoke /v1/agent/stream; trust $DEMO/ca.pem, resolve $NAME to $ADDRESS)
  SSH            $SSH deploy@$ADDRESS
  Compose        ssh ... sudo docker compose --project-directory /opt/agent ps
  Targets        ssh ... promtool query instant http://127.0.0.1:9090 up
  Prometheus     $SSH -N -L 9090:127.0.0.1:9090 deploy@$ADDRESS, then http://127.0.0.1:9090
  Alerts         ssh ... amtool alert query --alertmanager.url=http://127.0.0.1:9093
  Logs           ssh ... sudo journalctl COM_DOCKER_COMPOSE_PROJECT=agent -g <request id>
  Backups        ssh ... sudo vmstack-backup run agent; sudo vmstack-backup snapshots agent; sudo vmstack-backup drill agent
  Remove it      scripts/demo.sh down
TXT
else
  cat <<TXT

The reference stack answers over HTTPS on the load balancer "$VM-lb" ($ADDRESS), in front of the
API replicas of $VM-app1 (172.30.99.11) and $VM-app2 (172.30.99.12), which share PostgreSQL and
Redis on $VM-db (172.30.99.13); $VM-mon (172.30.99.14) runs Prometheus and Alertmanager:
  curl --cacert $DEMO/ca.pem --resolve $NAME:443:$ADDRESS https://$NAME/ready
  https://$NAME/   (/ready /v1/agent/invoke /v1/agent/stream; trust $DEMO/ca.pem, resolve $NAME to $ADDRESS)
  Prometheus     $SSH -N -L 9090:127.0.0.1:9090 deploy@172.30.99.14, then http://127.0.0.1:9090
  Targets        $SSH deploy@172.30.99.14 promtool query instant http://127.0.0.1:9090 up
  Alerts         $SSH deploy@172.30.99.14 amtool alert query --alertmanager.url=http://127.0.0.1:9093
  SSH            $SSH deploy@<address>
  Compose        ssh ... sudo docker compose --project-directory /opt/agent ps   (app1, app2, db)
  A release      ANSIBLE_CONFIG=$ANSIBLE_CONFIG ansible-playbook -i $INVENTORY playbooks/app.yml \\
                   --vault-password-file <(echo vmstack-demo) -e app_image=...   (host by host)
  Backups        ssh ... sudo vmstack-backup snapshots agent; sudo vmstack-backup drill agent   (on db)
  Remove them    scripts/demo.sh down
TXT
fi
