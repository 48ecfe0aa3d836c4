#!/bin/bash
# First boot of the service's machine (a templatefile: $${...} is for Terraform).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
# prometheus-node-exporter: disk space and the off-site copy's textfile metric
# (infra/prometheus/alerts.yml), on 127.0.0.1:9100 like the service's /metrics.
# clamav-daemon and clamav-freshclam: attached files are scanned before they are kept
# (MADOGUCHI_CLAMD below); freshclam keeps the signatures current.
apt-get install -y -q --no-install-recommends postgresql-client awscli openssl curl ca-certificates prometheus-node-exporter \
  clamav-daemon clamav-freshclam
echo 'ARGS="--web.listen-address=127.0.0.1:9100 --collector.textfile.directory=/var/lib/prometheus/node-exporter"' \
  >/etc/default/prometheus-node-exporter
systemctl restart prometheus-node-exporter

id madoguchi >/dev/null 2>&1 ||
  useradd --system --home-dir /var/lib/madoguchi --no-create-home --shell /usr/sbin/nologin madoguchi
# clamd starts only once its signatures are there (Debian's units ask for them):
# fetch them now, in the foreground, then start it and its socket
# (/run/clamav/clamd.ctl, made by clamav-daemon.socket for every local user).
systemctl stop clamav-freshclam || true
freshclam --stdout
systemctl enable --now clamav-freshclam clamav-daemon.socket clamav-daemon
for _ in $(seq 1 60); do [ -S /run/clamav/clamd.ctl ] && break; sleep 2; done
[ -S /run/clamav/clamd.ctl ] || { echo "clamd did not start" >&2; exit 1; }

# The state volume, found by its id (Nitro NVMe names vary); formatted only when blank.
volume="${state_volume_id}"
device="/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$${volume//-/}"
for _ in $(seq 1 120); do [ -e "$device" ] && break; sleep 5; done
[ -e "$device" ] || { echo "state volume $volume not attached" >&2; exit 1; }
blkid "$device" >/dev/null 2>&1 || mkfs.ext4 -q -L madoguchi-state "$device"
uuid=$(blkid -s UUID -o value "$device")
mkdir -p /var/lib/madoguchi
grep -q "$uuid" /etc/fstab || echo "UUID=$uuid /var/lib/madoguchi ext4 defaults,nofail,noatime 0 2" >>/etc/fstab
mountpoint -q /var/lib/madoguchi || mount /var/lib/madoguchi
chown madoguchi:madoguchi /var/lib/madoguchi
chmod 0700 /var/lib/madoguchi

install -d -m 0755 /etc/madoguchi
# The cluster's CA, for database_ca (sslmode=verify-full).
curl -fsS --retry 5 -o /etc/madoguchi/db-ca.pem \
  "https://truststore.pki.rds.amazonaws.com/${region}/${region}-bundle.pem"

# The HTTPS listener behind the load balancer (which encrypts to it but does not
# check its certificate); kept on the state volume, made once.
install -d -o madoguchi -g madoguchi -m 0700 /var/lib/madoguchi/tls
if [ ! -f /var/lib/madoguchi/tls/internal.pem ]; then
  runuser -u madoguchi -- openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -days 3650 -subj "/CN=madoguchi-internal" \
    -keyout /var/lib/madoguchi/tls/internal.key -out /var/lib/madoguchi/tls/internal.pem
fi

cat >/etc/madoguchi/env <<ENV
MADOGUCHI_TRUSTED_PROXIES=${trusted_proxies}
MADOGUCHI_TLS_CERT=/var/lib/madoguchi/tls/internal.pem
MADOGUCHI_TLS_KEY=/var/lib/madoguchi/tls/internal.key
MADOGUCHI_TLS_LISTEN=0.0.0.0:8443
MADOGUCHI_LOG_FORMAT=json
MADOGUCHI_CLAMD=/run/clamav/clamd.ctl
ENV
chmod 0640 /etc/madoguchi/env

# database_url needs the service role's password (terraform/README.md, step 2).
cat >/etc/madoguchi/madoguchi.toml.example <<TOML
database_url = "postgresql://madoguchi:PASSWORD@${db_host}:${db_port}/postgres?sslmode=verify-full"
database_ca = "/etc/madoguchi/db-ca.pem"
TOML

# The off-site copy (user madoguchi) writes its metric where node_exporter reads.
install -d -o prometheus -g madoguchi -m 0775 /var/lib/prometheus/node-exporter

cat >/etc/madoguchi/offsite.env <<ENV
OFFSITE_URL=s3://${backup_bucket}/backups
OFFSITE_KMS_KEY=${backups_kms_key}
AWS_REGION=${region}
ENV

cat >/etc/systemd/system/madoguchi.service <<'UNIT'
${systemd_unit}
UNIT
cat >/etc/systemd/system/madoguchi-offsite.service <<'UNIT'
${offsite_unit}
UNIT
cat >/etc/systemd/system/madoguchi-offsite.timer <<'UNIT'
${offsite_timer}
UNIT
# Stored files scanned again weekly with the day's signatures (waits for the binary).
cat >/etc/systemd/system/madoguchi-scan-files.service <<'UNIT'
${scan_unit}
UNIT
cat >/etc/systemd/system/madoguchi-scan-files.timer <<'UNIT'
${scan_timer}
UNIT
systemctl daemon-reload
systemctl enable --now madoguchi-offsite.timer madoguchi-scan-files.timer
# madoguchi.service is enabled once the binary and madoguchi.toml are in place.
