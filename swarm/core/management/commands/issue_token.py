"""`manage.py issue_token --scope engine [--tenant SLUG] [--name N]`: print a new API token once."""
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from swarm.core.choices import TokenScope
from swarm.core.services import api_token_issue
from tenancy.models import Tenant

ISSUABLE_SCOPES = [TokenScope.ADMIN, TokenScope.ENGINE, TokenScope.READ]


class Command(BaseCommand):
    help = "Issue an API token and print it. It is stored only as a hash and cannot be shown again."

    def add_arguments(self, parser):
        parser.add_argument("--scope", required=True, choices=[str(s) for s in ISSUABLE_SCOPES],
                            help="drone and execution tokens come from drone registration and spawns")
        parser.add_argument("--tenant", help="bind the token to this tenant (slug)")
        parser.add_argument("--name", default="", help="a label shown in the admin")
        parser.add_argument("--expires-days", type=int, help="expire after this many days")
        parser.add_argument("--create-tenant", action="store_true", help="create the tenant if it does not exist")

    def handle(self, *args, scope, tenant=None, name="", expires_days=None, create_tenant=False, **options):
        tenant_obj = None
        if tenant:
            tenant_obj = Tenant.objects.filter(slug=tenant).first()
            if tenant_obj is None and create_tenant:
                tenant_obj = Tenant.objects.create(slug=tenant, name=tenant)
            if tenant_obj is None:
                raise CommandError(f"No tenant {tenant!r} (pass --create-tenant to create it).")
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        _, plaintext = api_token_issue(scope=scope, name=name, tenant=tenant_obj, expires_at=expires_at)
        self.stdout.write(plaintext)
