"""Serializers of the drone API."""
from rest_framework import serializers

from drones.choices import DroneType
from drones.models import Drone, EscalationEvent
from swarm.core.serializers import RejectUnknownFields

MAX_LABELS = 64


class RegisterSerializer(serializers.Serializer):
    """`POST /drones/register` body."""

    join_token = serializers.CharField(max_length=200)
    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", max_length=100, error_messages={
        "invalid": "Use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit."})
    hostname = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    ip = serializers.IPAddressField(required=False, allow_null=True, default=None)
    drone_type = serializers.ChoiceField(choices=DroneType.choices, required=False, default=DroneType.UNKNOWN)
    labels = serializers.ListField(child=serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._:=/-]{0,63}$"),
                                   required=False, default=list, max_length=MAX_LABELS)
    capacity = serializers.IntegerField(min_value=0, max_value=1024, required=False, default=1)
    version = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    os = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    arch = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    sandbox = serializers.DictField(required=False, help_text=(
        "The build isolation the agent offers: {mode: bubblewrap | none | unavailable, detail, "
        "containers: {engine: podman | docker | '', detail}}; see docs/builds.md#the-sandbox and #containers."))


class RegisteredSerializer(serializers.Serializer):
    """`POST /drones/register` answer."""

    drone_id = serializers.IntegerField()
    name = serializers.CharField()
    token = serializers.CharField()
    heartbeat_interval = serializers.FloatField()
    ping_interval = serializers.FloatField()
    drone_type = serializers.CharField()


class HeartbeatSerializer(serializers.Serializer):
    """`POST /drones/heartbeat` body for the schema (checked by drones.protocol.heartbeat_parse; extra fields go to hooks)."""

    metrics = serializers.DictField(required=False, default=dict)
    running_build_ids = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    payload_hashes = serializers.DictField(required=False, default=dict)
    sandbox = serializers.DictField(required=False, help_text=(
        "Sent when the agent's build isolation changed (and once after it starts): {mode, detail, containers}; "
        "the answer then carries sandbox_recorded."))


class HeartbeatAnswerSerializer(serializers.Serializer):
    """`POST /drones/heartbeat` answer."""

    action = serializers.ChoiceField(choices=["run", "pause", "drain", "stop"])
    status = serializers.CharField()
    heartbeat_interval = serializers.FloatField()
    ping_interval = serializers.FloatField()


class DroneSerializer(serializers.ModelSerializer):
    """A drone as the fleet API shows it (no SSH or hypervisor secrets)."""

    health = serializers.SerializerMethodField()

    class Meta:
        model = Drone
        fields = ["id", "name", "hostname", "ip", "drone_type", "labels", "capacity", "agent_version", "os", "arch",
                  "sandbox", "sandbox_detail", "sandbox_reported_at", "container_engine", "container_detail", "status", "health", "registered_at", "last_seen_at", "last_heartbeat_at", "ws_connected",
                  "last_ping_at", "last_pong_at", "ping_latency_ms", "missed_pongs", "escalation_level",
                  "last_escalation_at", "escalation_attempts", "metrics"]

    def get_health(self, drone) -> str:
        return {0: "healthy", 1: "escalating", 2: "escalating", 3: "escalating", 4: "critical"}[drone.escalation_level]


class PingStatusSerializer(serializers.ModelSerializer):
    """Ping status of one drone."""

    class Meta:
        model = Drone
        fields = ["name", "ws_connected", "last_ping_at", "last_pong_at", "ping_latency_ms", "missed_pongs"]


class PingResultSerializer(serializers.Serializer):
    """Answer of `POST /drones/<name>/ping`."""

    name = serializers.CharField()
    ok = serializers.BooleanField()
    latency_ms = serializers.FloatField(allow_null=True)
    ws_connected = serializers.BooleanField()
    detail = serializers.CharField()


class PingAllSerializer(serializers.Serializer):
    """Answer of `POST /ping/all`."""

    pinged = serializers.ListField(child=serializers.CharField())


class EscalationEventSerializer(serializers.ModelSerializer):
    """One ladder step."""

    drone = serializers.CharField(source="drone.name")

    class Meta:
        model = EscalationEvent
        fields = ["id", "drone", "level", "action", "result", "detail", "at"]


class SetTypeSerializer(RejectUnknownFields, serializers.Serializer):
    """`POST /drones/<name>/set-type` body."""

    drone_type = serializers.ChoiceField(choices=DroneType.choices)
