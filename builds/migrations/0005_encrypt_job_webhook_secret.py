"""Job secrets in the one secret box: `webhook_secret` becomes `webhook_secret_encrypted`, its values encrypted.

The job's webhook secret was the one stored secret kept in clear. This adds
the encrypted column, encrypts every existing value into it with the current
first key (swarm/core/secret_box.py: SWARM_SECRETS_KEYS, else the development
key), and drops the plaintext column. The other two job columns only change
type to EncryptedTextField (no SQL): their values, written under the old
builds key, stay readable through the box's decrypt-only legacy keys and
move to the current key with `manage.py rotate_secrets`.

Reversible: going back decrypts the values into the plaintext column.
"""
from django.db import migrations

import swarm.core.secret_box

HELP_TEXT = "Shared secret of this repository's webhooks (else the global one)."


def encrypt_webhook_secrets(apps, schema_editor):
    # The box itself, not a copy frozen here: a migration encrypts exactly as the running code decrypts.
    from swarm.core.secret_box import encrypt_text

    Job = apps.get_model("builds", "Job")
    for pk, plaintext in Job.objects.exclude(webhook_secret="").values_list("pk", "webhook_secret").iterator():
        Job.objects.filter(pk=pk).update(webhook_secret_encrypted=encrypt_text(plaintext))


def decrypt_webhook_secrets(apps, schema_editor):
    from swarm.core.secret_box import decrypt_text, where

    Job = apps.get_model("builds", "Job")
    rows = Job.objects.exclude(webhook_secret_encrypted="").values_list("pk", "webhook_secret_encrypted")
    for pk, ciphertext in rows.iterator():
        plaintext = decrypt_text(ciphertext, where=where(Job, pk, "webhook_secret_encrypted"))
        Job.objects.filter(pk=pk).update(webhook_secret=plaintext)


class Migration(migrations.Migration):

    dependencies = [
        ("builds", "0004_log_append_function"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="webhook_secret_encrypted",
            field=swarm.core.secret_box.EncryptedTextField(blank=True, default="", help_text=HELP_TEXT),
        ),
        migrations.RunPython(encrypt_webhook_secrets, decrypt_webhook_secrets, elidable=False),
        migrations.RemoveField(
            model_name="job",
            name="webhook_secret",
        ),
        migrations.AlterField(
            model_name="job",
            name="scm_credential_encrypted",
            field=swarm.core.secret_box.EncryptedTextField(blank=True, default=""),
        ),
        migrations.AlterField(
            model_name="job",
            name="secrets_encrypted",
            field=swarm.core.secret_box.EncryptedTextField(blank=True, default="", kind="mapping"),
        ),
    ]
