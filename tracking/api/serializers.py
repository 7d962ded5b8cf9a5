"""The API's shapes. Teams and workers are serialized from their models; positions are already
in the live feed's shape (tracking.history.as_feed_position), so PositionSerializer only
documents them in the schema: running a DRF field per value would cost more than the query for
a page of a thousand positions."""

from rest_framework import serializers

from teams.models import Team, Worker


class TeamSerializer(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = ["slug", "name"]
        read_only_fields = fields  # answers only: every field is always there


class WorkerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Worker
        fields = ["id", "name", "active"]
        read_only_fields = fields


class PositionSerializer(serializers.Serializer):
    """A stored position in the live feed's names. An optional field a device did not send is
    left out (never null), exactly as on the live map's socket."""

    id = serializers.IntegerField(help_text="The worker's id.")
    lat = serializers.FloatField(help_text="Latitude, degrees (WGS 84).")
    lng = serializers.FloatField(help_text="Longitude, degrees (WGS 84).")
    ts = serializers.FloatField(help_text="When the device took it: Unix time, seconds.")
    acc = serializers.FloatField(required=False, help_text="Accuracy, metres.")
    speed = serializers.FloatField(required=False, help_text="Speed, metres a second.")
    heading = serializers.FloatField(required=False, help_text="Heading, degrees from north.")
    alt = serializers.FloatField(required=False, help_text="Altitude, metres above sea level.")
    batt = serializers.FloatField(required=False, help_text="Battery, percent.")


class ErrorSerializer(serializers.Serializer):
    """Every error (400, 401, 404) is one short sentence."""

    detail = serializers.CharField()
