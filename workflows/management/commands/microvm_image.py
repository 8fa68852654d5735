"""`manage.py microvm_image [--force] [--probe]`: build the microVM image (if its inputs changed) and probe KVM.

The image is built from Debian packages (see `swarm_agent.microvm.image`)
under `SWARM_MICROVM_IMAGE_DIR`, cached by the hash of its inputs: a second
run with nothing changed returns at once. `--probe` (also `make
microvm-image`) boots it once under KVM to learn whether KVM works on this
host, and caches the verdict the runtime uses.
"""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from swarm_agent.microvm.image import ImageBuildError, build_image
from swarm_agent.microvm.vm import VmUnavailable, probe_accelerator


class Command(BaseCommand):
    help = "Build the microVM image (kernel, initramfs, root filesystem) from Debian packages; probe KVM."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="rebuild even when the inputs did not change")
        parser.add_argument("--probe", action="store_true", help="probe (again) whether KVM works on this host")

    def handle(self, *args, force: bool = False, probe: bool = False, **options):
        verbose = options.get("verbosity", 1) > 1
        try:
            image = build_image(settings.SWARM_MICROVM_IMAGE_DIR, force=force,
                                log=(lambda line: self.stdout.write(line)) if verbose else (lambda line: None))
        except ImageBuildError as exc:
            raise CommandError(f"the microVM image could not be built: {exc}") from exc
        self.stdout.write(f"microVM image {image.key} at {image.directory} "
                          f"(kernel {image.manifest['kernel_release']}, {image.manifest['disk_mb']} MiB disk)")
        if probe:
            try:
                verdict = probe_accelerator(image, f"{settings.SWARM_MICROVM_IMAGE_DIR}/probes",
                                            timeout=settings.SWARM_MICROVM_PROBE_TIMEOUT, refresh=force)
            except VmUnavailable as exc:
                raise CommandError(str(exc)) from exc
            why = f" (KVM: {verdict['kvm_reason']})" if verdict.get("kvm_reason") else ""
            self.stdout.write(f"accelerator: {verdict['accelerator']}{why}")
