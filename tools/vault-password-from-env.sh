#!/usr/bin/env bash
# Ansible Vault password client for CI and AWX: prints ANSIBLE_VAULT_PASSWORD from the
# environment (a CI secret), so the password is never in a file or on a command line.
#   ansible-playbook ... --vault-password-file tools/vault-password-from-env.sh
set -euo pipefail
if [ -z "${ANSIBLE_VAULT_PASSWORD:-}" ]; then
  echo "vault-password-from-env: ANSIBLE_VAULT_PASSWORD is not set" >&2
  exit 1
fi
printf '%s\n' "$ANSIBLE_VAULT_PASSWORD"
