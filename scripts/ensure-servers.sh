#!/usr/bin/env bash
# The integration tests start their own mosquitto, redis-server and prometheus on free ports and
# drive chromium, and `make test` checks the alert rules with promtool and amtool; this makes sure the binaries exist, installing Debian's packages when they are
# missing and we are allowed to.
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# The console's browser tests drive Debian's chromium through playwright (no browser download).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# promtool and prometheus come with Debian's prometheus, amtool with prometheus-alertmanager.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} (Debian packages) for the integration tests" >&2
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo -n"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The packages start system services on the default ports; the tests need only the binaries.
$sudo_cmd systemctl disable --now mosquitto redis-server prometheus \
  prometheus-alertmanager prometheus-node-exporter >/dev/null 2>&1 || true
