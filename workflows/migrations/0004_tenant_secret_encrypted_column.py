"""Tenant secrets' `ciphertext` is an EncryptedTextField of the one secret box (swarm/core/secret_box.py).

A change of field type only (no SQL): the values are Fernet tokens under
SWARM_SECRETS_KEYS or the development key, which the box reads as before.
"""
from django.db import migrations

import swarm.core.secret_box


class Migration(migrations.Migration):

    dependencies = [
        ("workflows", "0003_executions_and_secrets"),
    ]

    operations = [
        migrations.AlterField(
            model_name="tenantsecret",
            name="ciphertext",
            field=swarm.core.secret_box.EncryptedTextField(),
        ),
    ]
