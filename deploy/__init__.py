"""Ship apps to devices: reproducible bundles, rollout through Ansible, health checks, rollback.

``bundle`` builds the archive (models, config, the device side of edgesdk as a wheel, an
install script, a systemd unit, a SHA-256 manifest); ``push`` runs the shipped Ansible role
(``ansible/``) over an inventory (a one-off one for ``USER@HOST`` and ``--hosts``), in rolling
batches, and the role drives ``agent`` (a stdlib-only script run by the device's ``python3``) to
verify, install, switch, health-check and roll back; ``pull`` writes what ``ansible-pull``
needs on devices that cannot be reached.
"""
