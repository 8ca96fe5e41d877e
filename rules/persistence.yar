// Writes that outlive the task: agent memory and instruction files, shell start-up files,
// scheduled jobs, login items, SSH authorized keys.

rule agent_memory_write {
  meta:
    category = "persistence"
    severity = "high"
    message = "code writes to an agent memory or instruction file (CLAUDE.md, AGENTS.md, MEMORY.md, SOUL.md, ...)"
  strings:
    $redirect = />>?\s*["']?[^\s"'|;&<>]{0,200}\b(CLAUDE|AGENTS|MEMORY|SOUL|GEMINI)\.md\b/
    $tee = /\btee\s+(-a\s+)?["']?[^\s"'|;&<>]{0,200}\b(CLAUDE|AGENTS|MEMORY|SOUL|GEMINI)\.md\b/
    $py = /\bopen\s*\([^\n)]{0,200}\b(CLAUDE|AGENTS|MEMORY|SOUL|GEMINI)\.md['"]\s*,\s*['"](a|w|a\+|w\+|ab|wb)['"]/
    $pathw = /\b(CLAUDE|AGENTS|MEMORY|SOUL|GEMINI)\.md['"]\s*\)?\s*\.(write_text|write_bytes|open\s*\(\s*['"][aw])/
    $js = /\b(appendFile|writeFile|appendFileSync|writeFileSync)\s*\([^\n)]{0,200}\b(CLAUDE|AGENTS|MEMORY|SOUL|GEMINI)\.md\b/
    $rules = />>?\s*["']?[^\s"'|;&<>]{0,200}(\.cursorrules|\.windsurfrules|\.clinerules|copilot-instructions\.md)\b/
    $claude = />>?\s*["']?(~|\$HOME|\$\{HOME\})\/\.claude\/(settings(\.local)?\.json|CLAUDE\.md|commands\/|agents\/|hooks)/
  condition:
    any of them
}

rule agent_memory_instruction {
  meta:
    category = "persistence"
    severity = "medium"
    message = "the text asks the agent to write into its memory or instruction files"
  strings:
    $a = /\b(add|append|write|save|insert|copy|put)\b[^\n]{0,80}\b(to|into|in)\s+(your\s+|the\s+)?(~\/\.claude\/)?(CLAUDE|AGENTS|MEMORY|SOUL|GEMINI)\.md\b/i
    $b = /\b(remember|memorize|store)\s+(this|these|the\s+following)\s+(permanently|forever|in\s+(your\s+)?(long[- ]term\s+)?memory)\b/i
  condition:
    (is_markdown or is_skill_md) and any of them
}

rule shell_rc_write {
  meta:
    category = "persistence"
    severity = "high"
    message = "code writes to a shell start-up file (~/.bashrc, ~/.zshrc, ~/.profile, ...)"
  strings:
    $redirect = />>?\s*["']?(~|\$HOME|\$\{HOME\}|\/root|\/home\/[a-z_][a-z0-9_-]{0,31})\/\.(bashrc|bash_profile|bash_login|zshrc|zprofile|zshenv|zlogin|profile|config\/fish\/config\.fish)\b/
    $tee = /\btee\s+(-a\s+)?["']?(~|\$HOME|\$\{HOME\})\/\.(bashrc|bash_profile|zshrc|zprofile|zshenv|profile)\b/
    $code = /\b(open|appendFile|appendFileSync|writeFile|writeFileSync)\s*\([^\n)]{0,160}\.(bashrc|bash_profile|zshrc|zprofile|zshenv)\b/
    $pathw = /\.(bashrc|bash_profile|zshrc|zprofile|zshenv|profile)['"]\s*\)?\s*\.(write_text|open\s*\(\s*['"][aw])/
    $etc = />>?\s*["']?\/etc\/(profile|bash\.bashrc|zshrc|environment|profile\.d\/)/
  condition:
    any of them
}

rule crontab_write {
  meta:
    category = "persistence"
    severity = "high"
    message = "code installs a scheduled job (crontab, /etc/cron*)"
  strings:
    $pipe = /\|\s*(sudo\s+)?crontab\s+(-u\s+\S+\s+)?-(\s|["'`);]|\n|$)/
    $etc = />>?\s*["']?\/etc\/(crontab|cron\.(d|daily|hourly|weekly|monthly)\/)/
    $spool = /\/var\/spool\/cron\//
  condition:
    any of them
}

rule login_item_install {
  meta:
    category = "persistence"
    severity = "high"
    message = "code installs a login item or service (LaunchAgents, systemd unit, autostart entry)"
  strings:
    $launch = /Library\/(LaunchAgents|LaunchDaemons)\/[^\s"']{0,120}\.plist/
    $launchctl = /\blaunchctl\s+(load|bootstrap|submit)\b/
    $systemd = /\.config\/systemd\/user\/[^\s"']{1,120}\.service/
    $autostart = /\.config\/autostart\/[^\s"']{1,120}\.desktop/
    $runkey = /CurrentVersion\\+Run(Once)?\b/
  condition:
    not is_markdown and any of them
}

rule ssh_authorized_keys_write {
  meta:
    category = "persistence"
    severity = "critical"
    message = "code adds a key to ~/.ssh/authorized_keys (a standing back door)"
  strings:
    $redirect = />>?\s*["']?(~|\$HOME|\$\{HOME\}|\/root|\/home\/[a-z_][a-z0-9_-]{0,31})?\/?\.ssh\/authorized_keys2?\b/
    $tee = /\btee\s+(-a\s+)?["']?[^\s"']{0,80}\.ssh\/authorized_keys\b/
    $code = /\b(open|appendFile|appendFileSync|writeFile|writeFileSync)\s*\([^\n)]{0,160}authorized_keys\b/
  condition:
    any of them
}
