"""Hypervisor API token secrets and join tokens are EncryptedTextField columns of the one secret box.

A change of field type only (no SQL): the stored values, written under the
old drones key, stay readable through the box's decrypt-only legacy keys
(swarm/core/secret_box.py) and move to the current key with
`manage.py rotate_secrets`.
"""
from django.db import migrations

import swarm.core.secret_box


class Migration(migrations.Migration):

    dependencies = [
        ("drones", "0003_heartbeat_hot_updates"),
    ]

    operations = [
        migrations.AlterField(
            model_name="hypervisor",
            name="token_secret_encrypted",
            field=swarm.core.secret_box.EncryptedTextField(blank=True, default=""),
        ),
        migrations.AlterField(
            model_name="jointoken",
            name="plaintext_encrypted",
            field=swarm.core.secret_box.EncryptedTextField(blank=True, default=""),
        ),
    ]
