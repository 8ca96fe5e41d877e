// Sensitive data sent to the network: a credential source and an upload close together.

rule secrets_upload_command {
  meta:
    category = "exfiltration"
    severity = "critical"
    message = "a command uploads credentials, keys or the environment to a remote endpoint"
  strings:
    $curl = /\b(curl|wget)\b[^\n]{0,200}(-d|--data|--data-binary|--data-raw|--data-urlencode|-F|--form|-T|--upload-file|--post-file|--post-data)[ =][^\n]{0,60}(\.ssh\/|\.aws\/|\.env\b|id_rsa|id_ed25519|\.kube\/config|\.git-credentials|\.netrc|\/etc\/passwd|\/etc\/shadow|Login Data|\$\((env|printenv)\))/
    $pipe = /\b(cat|tar|zip|base64|gzip)\b[^\n]{0,80}(\.ssh\b|\.aws\/credentials|\.env\b|id_rsa|id_ed25519|\.git-credentials|\.netrc|\.kube\/config)[^\n]{0,120}\|\s*(curl|nc|ncat|wget|openssl\s+s_client)\b/
    $env = /\b(env|printenv)\s*\|\s*(base64\s*\|\s*)?(curl|nc|ncat|wget)\b/
    $subst = /\b(curl|wget)\b[^\n]{0,200}\$\((env|printenv|cat\s+[^\n)]{0,60}(\.ssh\/|\.aws\/|\.env\b|id_rsa))/
  condition:
    any of them
}

rule secrets_upload_code {
  meta:
    category = "exfiltration"
    severity = "critical"
    message = "code reads credentials or the environment and sends them over the network"
  strings:
    $src1 = /\.ssh\/(id_[a-z0-9]+|\*)/
    $src2 = /\.aws\/credentials|\.git-credentials|\.kube\/config|\.docker\/config\.json|\.netrc\b/
    $src3 = /\b(dict\s*\(\s*os\.environ\s*\)|json\.dumps\s*\(\s*(dict\s*\(\s*)?os\.environ\b|JSON\.stringify\s*\(\s*process\.env\s*\))/
    $src4 = /(Login Data|logins\.json|key4\.db|cookies\.sqlite|dump-keychain)/
    $sink1 = /\brequests\.(post|put|patch)\s*\(/
    $sink2 = /\b(urllib\.request\.urlopen|urlopen|http\.client\.HTTPS?Connection|httpx\.(post|put)|aiohttp\.ClientSession)\b/
    $sink3 = /\bfetch\s*\([^\n]{0,200}method\s*:\s*['"](POST|PUT)['"]/
    $sink4 = /\b(axios\.(post|put)|smtplib\.SMTP|socket\.socket|ftplib\.FTP|paramiko)\b/
    $sink5 = /\bcurl\b[^\n]{0,120}(-d|--data|-F|-T|--upload-file)\b/
  condition:
    not is_markdown and any of ($src*) and any of ($sink*)
}

rule exfil_service_endpoint {
  meta:
    category = "exfiltration"
    severity = "high"
    message = "names a service used to receive stolen data or probe callbacks (webhook.site, requestbin, interactsh, ...)"
  strings:
    $a = /\b(webhook\.site|requestbin\.(com|net)|pipedream\.net|eo[a-z0-9]{10,}\.m\.pipedream|interact\.sh|oast\.(fun|me|pro|live|site|online)|burpcollaborator\.net|oastify\.com|canarytokens\.com|ngrok(-free)?\.(io|app|dev)|trycloudflare\.com|requestcatcher\.com|beeceptor\.com|hookbin\.com)\b/i
  condition:
    $a
}

rule chat_webhook_endpoint {
  meta:
    category = "exfiltration"
    severity = "medium"
    message = "posts to a chat webhook or bot API (Discord, Telegram, Slack), a common exfiltration channel"
  strings:
    $discord = /discord(app)?\.com\/api\/webhooks\/[0-9]+\//i
    $telegram = /api\.telegram\.org\/bot[0-9]{6,}:[A-Za-z0-9_-]{20,}/
    $slack = /hooks\.slack\.com\/services\/T[A-Z0-9]+\//
  condition:
    any of them
}

rule dns_exfiltration {
  meta:
    category = "exfiltration"
    severity = "high"
    message = "data is encoded into DNS look-ups (dig/nslookup of a variable subdomain)"
  strings:
    $a = /\b(dig|nslookup|host)\s+[^\n]{0,40}\$\([^\n)]{0,120}(base64|xxd|od\s|hexdump|whoami|hostname|cat\s)[^\n)]{0,120}\)\.[a-z0-9-]+\.[a-z]{2,}/
    $b = /\b(dig|nslookup)\s+["']?\$\{?[A-Za-z_][A-Za-z0-9_]*\}?\.[a-z0-9-]+\.[a-z]{2,}/
  condition:
    any of them
}
