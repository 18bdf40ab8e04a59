#!/bin/sh
# compose.yaml's one-shot `provision` service: everything a fresh stack needs before the broker,
# Redis and the services start. It writes nothing once done (a second `up` finds it done).
#   - the broker directory: CA certificate, server certificate, CRL, ACL, password file, and
#     mosquitto.conf = nabij's shipped config with the services' listener opened to the compose
#     network and persistence in the broker's data volume;
#   - a broker identity for the proximity service and each demo device;
#   - one Redis ACL user per nabij component, each with its own random password file;
#   - the Ed25519 key that signs the evidence trail's checkpoints.
# Directories can be moved for a dry run outside a container (tests/deploy/test_compose.py).
set -eu

CONFIG=${NABIJ_CONFIG:-/etc/nabij}
SHIPPED_BROKER_CONF=${NABIJ_SHIPPED_BROKER_CONF:-/etc/nabij-broker/nabij.conf}
BROKER=${NABIJ_BROKER_DIR:-/etc/mosquitto/nabij}
SECRETS=${NABIJ_SECRETS_DIR:-/var/lib/nabij/secrets}
CA=${NABIJ_CA_DIR:-/var/lib/nabij/ca}
DEMO_DEVICES="ank-sim-01 vic-sim-01"
# Owners inside the images: nabij (Dockerfile), mosquitto (eclipse-mosquitto), redis (redis).
NABIJ_UID=10001
MOSQUITTO_UID=1883
REDIS_UID=999

if [ -f "$SECRETS/provisioned" ]; then
    echo "already provisioned: $SECRETS/provisioned"
    exit 0
fi
mkdir -p "$BROKER" "$SECRETS/devices" "$CA"

nabij device init --broker-dir "$BROKER" --ca-cert "$CA/ca.crt" --ca-key "$CA/ca.key" \
    --server-name mosquitto
nabij device add proximity --service --broker-dir "$BROKER" --secrets "$SECRETS"
for device in $DEMO_DEVICES; do
    nabij device add "$device" --broker-dir "$BROKER" --secrets "$SECRETS/devices"
done
sed -e 's/^listener 1883 127\.0\.0\.1$/listener 1883/' "$SHIPPED_BROKER_CONF" > "$BROKER/mosquitto.conf"
printf '\n# compose.yaml: queued messages survive a broker restart in its data volume.\npersistence_location /mosquitto/data/\n' \
    >> "$BROKER/mosquitto.conf"

# The evidence trail's signing key (docs/evidence.md); its public half goes into every export.
nabij audit keygen "$SECRETS/audit.key"

for role in proximity gateway console probation police; do
    python -c 'import secrets; print(secrets.token_urlsafe(32))' > "$SECRETS/redis-$role"
done
chmod 0400 "$SECRETS"/redis-*
nabij redis-acl --config "$CONFIG" > "$SECRETS/redis-users.acl"

if [ "$(id -u)" = 0 ]; then   # in the container; a dry run as a user keeps its own files
    chown -R "$MOSQUITTO_UID:$MOSQUITTO_UID" "$BROKER"
    chown -R "$NABIJ_UID:$NABIJ_UID" "$SECRETS"
    chown "$REDIS_UID:$REDIS_UID" "$SECRETS/redis-users.acl"
fi
touch "$SECRETS/provisioned"
echo "provisioned: broker $BROKER, secrets $SECRETS"
