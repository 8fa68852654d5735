"""MicroVMs for executions: the image build, the QEMU launch and the guest's init.

Standard library only (no Django): the control plane's `microvm` runtime and,
later, a drone hosting microVMs run the same code.
"""
