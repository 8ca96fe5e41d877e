// Secrets shipped in the package. Documented example values (AWS's EXAMPLE keys, "..."
// bodies) do not match.

rule private_key_material {
  meta:
    category = "secret"
    severity = "high"
    message = "a private key"
  strings:
    $pem = /-----BEGIN (RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY( BLOCK)?-----\r?\n(Proc-Type:[^\n]{0,80}\n)?(DEK-Info:[^\n]{0,120}\n)?\r?\n?[A-Za-z0-9+\/=]{60,}/
  condition:
    $pem
}

rule aws_access_key {
  meta:
    category = "secret"
    severity = "high"
    message = "an AWS access key id"
  strings:
    $key = /\b(AKIA|ASIA)[0-9A-Z]{16}\b/
    $example = /\b(AKIA|ASIA)[0-9A-Z]{9}EXAMPLE\b/
  condition:
    #key > #example
}

rule github_token {
  meta:
    category = "secret"
    severity = "high"
    message = "a GitHub token"
  strings:
    $classic = /\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b/
    $fine = /\bgithub_pat_[A-Za-z0-9_]{60,}/
  condition:
    any of them
}

rule ai_provider_key {
  meta:
    category = "secret"
    severity = "high"
    message = "an AI provider API key (Anthropic, OpenAI)"
  strings:
    $anthropic = /\bsk-ant-(api|admin)[0-9]{2}-[A-Za-z0-9_-]{80,}/
    $openai = /\bsk-[A-Za-z0-9_-]{0,64}T3BlbkFJ[A-Za-z0-9_-]{20,}/
    $proj = /\bsk-(proj|svcacct|admin)-[A-Za-z0-9_-]{80,}/
  condition:
    any of them
}

rule cloud_service_token {
  meta:
    category = "secret"
    severity = "high"
    message = "a cloud or SaaS token (Google, Slack, Stripe, GitLab, npm, PyPI)"
  strings:
    $google = /\bAIza[0-9A-Za-z_-]{35}\b/
    $slack = /\bxox[baprs]-[0-9]{10,13}-[0-9A-Za-z-]{10,}/
    $stripe = /\b(sk|rk)_live_[0-9a-zA-Z]{24,}/
    $gitlab = /\bglpat-[A-Za-z0-9_-]{20}\b/
    $npm = /\bnpm_[A-Za-z0-9]{36}\b/
    $pypi = /\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}/
  condition:
    any of them
}
