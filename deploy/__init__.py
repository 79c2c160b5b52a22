"""Ship apps to devices: reproducible bundles, install over OpenSSH, health checks, rollback.

``bundle`` builds the archive (models, config, the device side of edgesdk as a wheel, an
install script, a systemd unit, a SHA-256 manifest); ``push`` copies it over ``ssh``/``scp``
and drives ``agent`` (a stdlib-only script run by the device's ``python3``) to verify,
install, switch and health-check it.
"""
