"""Real `mosquitto` and `redis-server` processes for integration tests, on free ports.

Each server gets its own directory (config, data, log), listens on 127.0.0.1 only and never
touches the system instances on 1883/6379. `start()` returns once the server answers its protocol
(an MQTT CONNACK, a Redis PONG), polling every 20 ms; a server that does not come up in time, or
exits, raises `ServerError` with the tail of its log.

`stop()` ends the process gracefully (SIGTERM: Mosquitto saves its persistence file), `kill()`
with SIGKILL (nothing saved beyond what the server already wrote), `restart()` starts it again on
the same port with the same data directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import quote

import paho.mqtt.client as paho
import redis
from paho.mqtt.reasoncodes import ReasonCode

from services.access.broker_auth import SERVICE_PREFIX, hash_password, with_user
from services.cli import main as cli_main
from services.shell import mqtt_packets as packets
from services.shell.mqtt import MqttEndpoint, make_client, read_secret

READY_TIMEOUT_S: Final = 15.0
STOP_TIMEOUT_S: Final = 10.0
POLL_INTERVAL_S: Final = 0.02
HOST: Final = "127.0.0.1"
ENSURE_HINT: Final = "run scripts/ensure-servers.sh to install it (Debian package)"
_PR_SET_PDEATHSIG: Final = 1
SHIPPED_MOSQUITTO_CONF: Final = Path(__file__).parents[1] / "config" / "mosquitto" / "nabij.conf"
SHIPPED_BROKER_DIR: Final = "/etc/mosquitto/nabij/"
TEST_TOPIC_PREFIX: Final = "+/v1"
"""The ACL's prefix in tests: any `<unique prefix>/v1`, as the stack configures topics."""


class ServerError(RuntimeError):
    """A test server could not be started or stopped."""


class MissingBinaryError(ServerError):
    """The server binary is not installed."""


def find_binary(name: str, fallbacks: Sequence[str] = ()) -> str:
    """Path of `name` on PATH or at one of `fallbacks` (/usr/sbin is often not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    raise MissingBinaryError(f"{name} not found on PATH nor at {list(fallbacks)}: {ENSURE_HINT}")


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: the server gets SIGKILL if pytest dies without running its teardown.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _ServerProcess:
    """One server process with a config file, a data directory and a log file."""

    name = "server"

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.log_path = directory / f"{self.name}.log"
        self.config_path = directory / f"{self.name}.conf"
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None

    # --- subclass hooks ------------------------------------------------------------------------

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _config(self) -> str:
        raise NotImplementedError

    def _answers(self) -> bool:
        """True once the server answers its protocol on `self.port`."""
        raise NotImplementedError

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the process and wait until it answers; a lost port race picks another port."""
        if self.running:
            raise ServerError(f"{self.name} already running on port {self.port}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port else 3
        for attempt in range(1, attempts + 1):
            try:
                self._spawn_and_wait()
                return
            except ServerError:
                if attempt == attempts or "in use" not in self.log_tail():
                    raise
                self.port = free_port()

    def stop(self) -> None:
        """SIGTERM and wait for a clean exit (SIGKILL if it hangs); no-op if not running."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        self._process = None

    def kill(self) -> None:
        """SIGKILL, like a crash or power cut of the server host."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
        self._process = None

    def restart(self) -> None:
        """Stop (gracefully) if running, then start on the same port with the same data."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _spawn_and_wait(self) -> None:
        self.config_path.write_text(self._config(), encoding="utf-8")
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {self.name} on port {self.port}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509  # only prctl, async-signal-safe enough
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise ServerError(
                    f"{self.name} exited with {code} on start (port {self.port}):\n"
                    f"{self.log_tail()}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(
                    f"{self.name} did not answer on port {self.port} within "
                    f"{READY_TIMEOUT_S} s:\n{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL_S)


class MosquittoServer(_ServerProcess):
    """`mosquitto` with a persistent store and effectively unbounded queues.

    `secure` (the default): the shipped `config/mosquitto/nabij.conf`, its paths pointed at this
    server's broker directory, which `nabij device init` fills with a throwaway CA, the broker's
    certificate, the ACL (rendered for any `<name>/v1` prefix, so each test's unique prefix
    works) and a password file; its three listeners (password, TLS with client certificates, TLS
    with passwords) on free ports. `url` then carries the credentials of a test observer that
    may read and write everything (an ACL section appended for tests only); devices and services
    get their own with `provision`. `secure=False`: an open development broker, anonymous access.
    """

    name = "mosquitto"
    OBSERVER: Final = "test.observer"

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        autosave_interval_s: int | None = None,
        secure: bool = True,
    ) -> None:
        super().__init__(directory, port)
        self.binary = find_binary("mosquitto", ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"])
        # None: Mosquitto's default (save on clean stop, else every 30 min). Set it to have a
        # kill() keep what was queued up to that many seconds before.
        self.autosave_interval_s = autosave_interval_s
        self.secure = secure
        self.broker_dir = directory / "broker"
        self.secrets_dir = directory / "secrets"
        self.ca_cert, self.ca_key = directory / "ca.crt", directory / "ca.key"
        self.tls_port, self.tls_password_port = free_port(), free_port()
        self._passwords = {self.OBSERVER: os.urandom(12).hex()}

    @property
    def open_url(self) -> str:
        """No credentials: refused by a secure broker, the development path on an open one."""
        return f"mqtt://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        if not self.secure:
            return self.open_url
        return self.url_for(self.OBSERVER)

    def url_for(self, username: str) -> str:
        """A URL with `username`'s credentials (provisioned on first use)."""
        password = self._passwords.get(username) or self.provision(username)
        return f"mqtt://{quote(username, safe='')}:{quote(password, safe='')}@{HOST}:{self.port}"

    @property
    def tls_url(self) -> str:
        """The client-certificate listener (`certificate(...)` for the files)."""
        return f"mqtts://{HOST}:{self.tls_port}"

    @property
    def persistence_file(self) -> Path:
        return self.data_dir / "mosquitto.db"

    def provision(self, username: str, *, service: bool = False) -> str:
        """`nabij device add` (a device id, or with `service` a service name), then a reload
        that has taken effect; returns the password."""
        name = username.removeprefix(SERVICE_PREFIX) if service else username
        self._device("add", name, "--secrets", str(self.secrets_dir), service=service)
        password = read_secret(self.secret_file(username))
        self._passwords[username] = password
        self._reload_until(lambda: self._connack(username, password) == 0)
        return password

    def service_identity_toml(self, service: str) -> str:
        """`[mqtt]` lines for a nabij service's own user (provisioned now): username and
        password_file, as an operator configures them."""
        username = SERVICE_PREFIX + service
        if username not in self._passwords:
            self.provision(username, service=True)
        return f'username = "{username}"\npassword_file = "{self.secret_file(username)}"\n'

    def secret_file(self, username: str) -> Path:
        return self.secrets_dir / f"{username}.password"

    def certificate(self, username: str, *, service: bool = False) -> tuple[Path, Path]:
        """A client certificate (CN = `username`) from `nabij device add --cert`: (cert, key)."""
        name = username.removeprefix(SERVICE_PREFIX) if service else username
        self._device(
            "add", name, "--secrets", str(self.secrets_dir), "--cert", *self._ca_args(),
            service=service,
        )  # fmt: skip
        self._passwords[username] = read_secret(self.secret_file(username))
        return self.secrets_dir / f"{username}.crt", self.secrets_dir / f"{username}.key"

    def revoke(self, username: str) -> None:
        """`nabij device revoke` with the broker's pid file: SIGHUP, so it takes effect."""
        password = self._passwords.pop(username)
        self._device("revoke", username, *self._ca_args(), "--pid-file", str(self._pid_file()))
        self._reload_until(lambda: self._connack(username, password) != 0, signal_it=False)

    def _device(self, action: str, name: str, *extra: str, service: bool = False) -> None:
        flags = ["--service"] if service else []
        code = cli_main(
            ["device", action, name, *flags, "--broker-dir", str(self.broker_dir), *extra]
        )
        if code != 0:
            raise ServerError(f"nabij device {action} {name} failed ({code})")

    def _ca_args(self) -> list[str]:
        return ["--ca-cert", str(self.ca_cert), "--ca-key", str(self.ca_key)]

    def _pid_file(self) -> Path:
        path = self.directory / "mosquitto.pid"
        path.write_text(f"{self.pid}\n", encoding="utf-8")
        return path

    def _reload_until(self, done: Callable[[], bool], *, signal_it: bool = True) -> None:
        if not self.running:
            return
        if signal_it:
            os.kill(self._require_pid(), signal.SIGHUP)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not done():
            if time.monotonic() > deadline:
                raise ServerError(f"mosquitto did not reload within {READY_TIMEOUT_S} s")
            time.sleep(POLL_INTERVAL_S)

    def _require_pid(self) -> int:
        if self.pid is None:
            raise ServerError("mosquitto is not running")
        return self.pid

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    def _config(self) -> str:
        lines = self._secure_config() if self.secure else [
            f"listener {self.port} {HOST}", "allow_anonymous true",
        ]  # fmt: skip
        lines += [
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "persistence_file mosquitto.db",
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            "message_size_limit 0",
            "set_tcp_nodelay true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"autosave_interval {self.autosave_interval_s or 1800}",
        ]
        if os.geteuid() == 0:
            # Run as root, Mosquitto would switch to user `mosquitto`, which cannot write here.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def _secure_config(self) -> list[str]:
        """The shipped config on this server's ports and broker directory; the test lines that
        follow override its tuning (later settings win)."""
        if not (self.broker_dir / "acl").exists():
            self._device_init()
        shipped = SHIPPED_MOSQUITTO_CONF.read_text(encoding="utf-8")
        listeners = {
            "listener 1883 127.0.0.1": f"listener {self.port} {HOST}",
            "listener 8883": f"listener {self.tls_port} {HOST}",
            "listener 8884": f"listener {self.tls_password_port} {HOST}",
        }
        for shipped_line, test_line in listeners.items():
            assert re.search(f"^{shipped_line}$", shipped, re.M), f"{shipped_line!r} not shipped"
            shipped = re.sub(f"^{shipped_line}$", test_line, shipped, flags=re.M)
        shipped = shipped.replace(SHIPPED_BROKER_DIR, f"{self.broker_dir}/")
        return [line for line in shipped.splitlines() if not line.startswith("autosave_interval")]

    def _device_init(self) -> None:
        code = cli_main(
            [
                "device", "init", "--broker-dir", str(self.broker_dir), *self._ca_args(),
                "--topic-prefix", TEST_TOPIC_PREFIX, "--server-name", HOST,
            ]
        )  # fmt: skip
        if code != 0:
            raise ServerError(f"nabij device init failed ({code})")
        with (self.broker_dir / "acl").open("a", encoding="utf-8") as acl:
            acl.write(f"\n# Tests only: an observer that sees everything.\nuser {self.OBSERVER}\n")
            acl.write("topic readwrite #\n")
        hashed = hash_password(self._passwords[self.OBSERVER], os.urandom(12))
        passwd = self.broker_dir / "passwd"
        passwd.write_text(with_user(passwd.read_text(), self.OBSERVER, hashed), encoding="utf-8")

    def _connack(self, username: str | None, password: str | None) -> int | None:
        """The CONNACK code an MQTT 3.1.1 CONNECT with these credentials gets (None: no answer)."""
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                sock.sendall(
                    packets.connect(
                        "", clean_session=True, keepalive_s=60, username=username,
                        password=password,
                    )
                )  # fmt: skip
                reply = _recv_exactly(sock, 4)
                with contextlib.suppress(OSError):
                    sock.sendall(packets.DISCONNECT_PACKET)
        except OSError:
            return None
        return reply[3] if len(reply) == 4 and reply[0] == 0x20 else None

    def _answers(self) -> bool:
        return self._connack(None, None) is not None


class RedisServer(_ServerProcess):
    """`redis-server` with an fsync-always append-only file and no RDB snapshots.

    `extra_config` lines are appended to its config file, e.g. `maxmemory 256mb`. With
    `acl_rules` (the text of an ACL file, e.g. `nabij redis-acl`'s) the server loads them as its
    ACL file, plus a test administrator that `client()` and `admin_url` use.
    """

    name = "redis"
    ADMIN_USER: Final = "test-admin"

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        extra_config: Sequence[str] = (),
        acl_rules: str | None = None,
    ) -> None:
        super().__init__(directory, port)
        self.binary = find_binary("redis-server", ["/usr/bin/redis-server"])
        self.extra_config = tuple(extra_config)
        self.acl_rules = acl_rules
        self._admin_password = secrets.token_hex(16)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def admin_url(self) -> str:
        """The URL with the administrator's credentials when an ACL is loaded, else `url`."""
        if self.acl_rules is None:
            return self.url
        return f"redis://{self.ADMIN_USER}:{self._admin_password}@{HOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A new client (bytes replies) for this server, as the administrator under an ACL."""
        return redis.Redis.from_url(self.admin_url, socket_timeout=10, socket_connect_timeout=2)

    @property
    def acl_path(self) -> Path:
        return self.directory / "users.acl"

    def _command(self) -> list[str]:
        return [self.binary, str(self.config_path)]

    def _config(self) -> str:
        return (
            "\n".join(
                [
                    f"port {self.port}",
                    f"bind {HOST}",
                    f'dir "{self.data_dir}"',
                    "daemonize no",
                    'logfile ""',
                    "appendonly yes",
                    "appendfsync always",
                    'save ""',
                    "protected-mode yes",
                    *self._acl_config(),
                    *self.extra_config,
                ]
            )
            + "\n"
        )

    def _acl_config(self) -> list[str]:
        if self.acl_rules is None:
            return []
        admin = f"user {self.ADMIN_USER} on >{self._admin_password} ~* &* +@all\n"
        self.acl_path.write_text(self.acl_rules + admin, encoding="utf-8")
        return [f'aclfile "{self.acl_path}"']

    def _answers(self) -> bool:
        client = redis.Redis.from_url(self.admin_url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        finally:
            client.close()


# A Redis that refuses writes once full instead of evicting keys: how nabij is meant to run.
CAPPED_REDIS: Final = ("maxmemory 256mb", "maxmemory-policy noeviction")


class RedisClusterServers:
    """A real Redis Cluster: `masters` `redis-server` processes in cluster mode on free ports
    (client and bus port each), the 16384 slots spread over them by `redis-cli --cluster create`,
    no replicas. `start()` returns once every node reports `cluster_state:ok`."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(
                directory / f"node-{index}",
                extra_config=(
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    "cluster-node-timeout 5000",
                    # The bus port is port + 10000 unless set: a free port above 55535 has none.
                    f"cluster-port {free_port()}",
                ),
            )
            for index in range(masters)
        ]
        self.cli = find_binary("redis-cli", ["/usr/bin/redis-cli"])

    @property
    def url(self) -> str:
        """Any node's URL: a cluster client learns the others from it."""
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        create = ["--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        created = subprocess.run(
            [self.cli, *create],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise ServerError(f"cluster create failed: {created.stdout!r} {created.stderr!r}")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(self._ok(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise ServerError("cluster did not reach cluster_state:ok")
            time.sleep(POLL_INTERVAL_S)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.url, socket_timeout=10, socket_connect_timeout=2)

    @staticmethod
    def _ok(node: RedisServer) -> bool:
        with node.client() as client:
            info = client.cluster("info")  # redis-py parses the reply into a dict
        return bool(info.get("cluster_state") == "ok")


FILLER_KEY: Final = "test:filler"


def fill_to_the_cap(client: redis.Redis) -> None:
    """Take all of Redis's `maxmemory` with one key, so that it refuses every further write.

    SETRANGE past the end makes Redis allocate the string itself: a short command (a short AOF
    entry too) whatever the size. Deleting `FILLER_KEY` frees the memory again.
    """
    maxmemory = int(client.config_get("maxmemory")["maxmemory"] or 0)
    assert maxmemory > 0, "this Redis has no maxmemory"
    client.setrange(FILLER_KEY, maxmemory, b"x")


class MqttProbe:
    """A paho client for tests: blocking connect/subscribe/publish, received messages queued.

    Built with `services.shell.mqtt.make_client`, so it is configured as the services' clients
    are. With `manual_ack=True` nothing is acknowledged until `ack(message)`.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        persistent_session: bool = False,
        manual_ack: bool = False,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.endpoint = MqttEndpoint.from_url(url)
        self.client = make_client(
            self.endpoint,
            client_id,
            persistent_session=persistent_session,
            manual_ack=manual_ack,
            will=will,
        )
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._connacks: queue.Queue[tuple[bool, ReasonCode]] = queue.Queue()
        self._subacks: queue.Queue[int] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def connect(self, timeout_s: float = 10.0) -> bool:
        """Connect and wait for the CONNACK; returns the broker's `session_present` flag."""
        self.client.connect(self.endpoint.host, self.endpoint.port, keepalive=30)
        self.client.loop_start()
        try:
            session_present, code = self._connacks.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no CONNACK within {timeout_s} s") from None
        if code.is_failure:
            raise AssertionError(f"connection refused: {code}")
        return session_present

    def subscribe(self, topic: str, qos: int = 1, timeout_s: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK."""
        _, mid = self.client.subscribe(topic, qos=qos)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self._subacks.get(timeout=max(0.0, deadline - time.monotonic())) == mid:
                    return
            except queue.Empty:
                raise AssertionError(f"no SUBACK for {topic!r} within {timeout_s} s") from None

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        """Publish and, for QoS 1, wait for the broker's PUBACK."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=timeout_s)
        if not info.is_published():
            raise AssertionError(f"publish to {topic!r} not acknowledged within {timeout_s} s")

    def next_message(self, timeout_s: float = 10.0) -> paho.MQTTMessage:
        """The next received message; AssertionError if none arrives within `timeout_s`."""
        try:
            return self.messages.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout_s} s") from None

    def ack(self, message: paho.MQTTMessage) -> None:
        """Send the PUBACK of a message received with `manual_ack=True`."""
        self.client.ack(message.mid, message.qos)

    def disconnect(self) -> None:
        """A clean DISCONNECT (no last will) and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """Vanish without DISCONNECT, as a crashed device: the broker publishes the last will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        _properties: object,
    ) -> None:
        self._connacks.put((flags.session_present, reason_code))

    def _on_subscribe(
        self,
        _client: paho.Client,
        _userdata: object,
        mid: int,
        _reason_codes: object,
        _properties: object,
    ) -> None:
        self._subacks.put(mid)

    def _on_message(
        self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage
    ) -> None:
        self.messages.put(message)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


__all__ = [
    "CAPPED_REDIS",
    "FILLER_KEY",
    "MissingBinaryError",
    "MosquittoServer",
    "MqttProbe",
    "RedisServer",
    "ServerError",
    "fill_to_the_cap",
    "find_binary",
    "free_port",
]


class PrometheusServer(_ServerProcess):
    """Debian's `prometheus` scraping `targets` (host:port) every second as job `nabij`, with
    nabij's alert rules evaluated every second, its TSDB in its own data directory."""

    name = "prometheus"
    RULES: Final = Path(__file__).parent.parent / "config/prometheus/rules/nabij.yml"

    def __init__(self, directory: Path, targets: Sequence[str], port: int | None = None) -> None:
        super().__init__(directory, port)
        self.binary = find_binary("prometheus", ["/usr/bin/prometheus"])
        self.targets = tuple(targets)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def api(self, path: str, **params: str) -> object:
        """The `data` of a Prometheus HTTP API answer; raises on an error answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
            body = json.loads(answer.read())
        if body.get("status") != "success":
            raise ServerError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, object]]:
        """The instant vector `promql` evaluates to now (an error if it does not parse)."""
        data = self.api("query", query=promql)
        assert isinstance(data, dict)
        result = data["result"]
        assert isinstance(result, list)
        return result

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address={HOST}:{self.port}",
        ]

    def _config(self) -> str:
        # JSON is YAML: no YAML library needed to write it.
        return json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(self.RULES)],
                "scrape_configs": [
                    {"job_name": "nabij", "static_configs": [{"targets": list(self.targets)}]}
                ],
            }
        )

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False
