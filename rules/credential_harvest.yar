// Reads of credential stores. Rules that name a file look for a read next to it, so
// documentation that merely mentions ~/.ssh is not flagged.

rule ssh_key_read {
  meta:
    category = "credential_harvest"
    severity = "high"
    message = "code reads SSH private keys or the ~/.ssh folder"
  strings:
    $read = /\b(cat|less|more|head|tail|cp|scp|rsync|base64|xxd|tar|zip|open|read_text|read_bytes|readFile|readFileSync|Get-Content|type)\b[^\n]{0,80}\.ssh\/(id_[a-z0-9]+|identity|\*)/
    $walk = /\b(glob|listdir|scandir|walk|readdir|readdirSync|iterdir|Get-ChildItem)\s*\(?[^\n)]{0,60}\.ssh\b/
    $tarall = /\b(tar|zip|cp\s+-r|rsync)\b[^\n]{0,60}(~|\$HOME|\$\{HOME\})\/\.ssh\b/
  condition:
    not is_markdown and any of them
}

rule cloud_credentials_read {
  meta:
    category = "credential_harvest"
    severity = "high"
    message = "code reads cloud, registry or git credential files"
  strings:
    $read = /\b(cat|cp|scp|base64|tar|zip|open|read_text|read_bytes|readFile|readFileSync|Get-Content|type)\b[^\n]{0,80}(\.aws\/credentials|\.config\/gcloud\/(credentials|application_default_credentials|access_tokens)|\.azure\/(accessTokens|msal_token_cache)|\.kube\/config|\.docker\/config\.json|\.netrc|\.npmrc|\.pypirc|\.git-credentials|\.config\/gh\/hosts\.yml)/
  condition:
    not is_markdown and $read
}

rule browser_credential_store {
  meta:
    category = "credential_harvest"
    severity = "critical"
    message = "code reaches into browser password or cookie stores"
  strings:
    $path = /(Google\/Chrome|Google\\Chrome|Chromium|BraveSoftware|Microsoft\/Edge|Microsoft\\Edge|Mozilla\/Firefox|\.mozilla\/firefox|Opera Software)[^\n]{0,160}(Login Data|Cookies|Web Data|logins\.json|key4\.db|cookies\.sqlite|Local State)/
    $key = /os_crypt[^\n]{0,80}encrypted_key/
  condition:
    any of them
}

rule keychain_dump {
  meta:
    category = "credential_harvest"
    severity = "critical"
    message = "code dumps an OS credential store (keychain dump, LSASS, mimikatz, /etc/shadow)"
  strings:
    $dump = /\bsecurity\s+dump-keychain\b/
    $mimi = /\b(mimikatz|sekurlsa::|lsadump::)/i
    $lsass = /\bprocdump[^\n]{0,60}\blsass\b/i
    $shadow = /\b(cat|cp|open|read_text|readFile|readFileSync)\b[^\n]{0,40}\/etc\/shadow\b/
  condition:
    any of them
}

rule keychain_password_read {
  meta:
    category = "credential_harvest"
    severity = "medium"
    message = "code reads a password from the OS keychain"
  strings:
    $a = /\bsecurity\s+(find-generic-password|find-internet-password)\b/
    $b = /\bsecret-tool\s+lookup\b/
  condition:
    any of them
}

rule crypto_wallet_read {
  meta:
    category = "credential_harvest"
    severity = "high"
    message = "code reaches into cryptocurrency wallet stores"
  strings:
    $paths = /(Electrum\/wallets|exodus\.wallet|Exodus\/exodus|Ethereum\/keystore|\bwallet\.dat\b|Atomic\/Local Storage)/
    $metamask = "nkbihfbeogaeaoehlefnkodbefgpgknn"
    $phantom = "bfnaelmomeimhlpmgjnjophhpkkoljpa"
  condition:
    not is_markdown and any of them
}

rule password_prompt_phish {
  meta:
    category = "credential_harvest"
    severity = "high"
    message = "code shows a fake password prompt (osascript dialog with hidden answer)"
  strings:
    $a = /display\s+dialog[^\n]{0,300}(password|passcode)[^\n]{0,300}hidden\s+answer/i
    $b = /display\s+dialog[^\n]{0,300}hidden\s+answer[^\n]{0,300}(password|passcode)/i
  condition:
    any of them
}

rule environment_dump {
  meta:
    category = "credential_harvest"
    severity = "medium"
    message = "code collects the whole environment (where tokens live)"
  strings:
    $py = /\b(dict\s*\(\s*os\.environ\s*\)|json\.dumps\s*\(\s*(dict\s*\(\s*)?os\.environ\b)/
    $js = /JSON\.stringify\s*\(\s*process\.env\s*\)/
    $sh = /\b(env|printenv)\s*(>|\|)/
    $ps = /Get-ChildItem\s+env:/i
  condition:
    not is_markdown and any of them
}
