// Prompt injection and jailbreak phrasing aimed at the agent reading the skill.

rule ignore_previous_instructions {
  meta:
    category = "prompt_injection"
    severity = "high"
    message = "tells the agent to ignore or override its previous instructions"
  strings:
    $a = /\b(ignore|disregard|forget|override|bypass)\s+(all\s+|any\s+|every\s+)?(of\s+)?(your\s+|the\s+|my\s+)?(previous|prior|above|earlier|preceding|system|original|existing|other)\s+(instructions|prompts?|rules|directives|guidelines|messages|context|guardrails)\b/i
    // The same phrase opened by a quote: an example of an attack (documentation that
    // teaches defence against it), not an instruction.
    $q = /(["'`(]|\xe2\x80\x9c)\s*(ignore|disregard|forget|override|bypass)\s+(all\s+|any\s+|every\s+)?(of\s+)?(your\s+|the\s+|my\s+)?(previous|prior|above|earlier|preceding|system|original|existing|other)\s+(instructions|prompts?|rules|directives|guidelines|messages|context|guardrails)\b/i
  condition:
    // In SKILL.md (what the agent reads as instructions) every occurrence counts; in
    // other files only one that is not a quotation.
    (is_skill_md and $a) or #a > #q
}

rule conceal_from_user {
  meta:
    category = "prompt_injection"
    severity = "high"
    message = "tells the agent to hide what it does from the user"
  strings:
    $tell = /\b(do\s+not|don'?t|never)\s+(tell|inform|mention|reveal|show|disclose|notify|alert|report)\s+(this\s+|it\s+|anything\s+|any\s+of\s+this\s+)?(to\s+)?(the\s+)?(user|human|operator)\b/i
    $without = /\bwithout\s+(telling|informing|notifying|alerting)\s+(the\s+)?(user|human|operator)\b/i
    $knowledge = /\bwithout\s+the\s+(user|human|operator)'?s?\s+(knowledge|consent|awareness)\b/i
    $silent = /\b(silently|secretly|covertly|quietly)\s+(run|execute|send|upload|copy|exfiltrate|install|download|collect|forward|transmit)\b/i
  condition:
    any of them
}

rule jailbreak_persona {
  meta:
    category = "prompt_injection"
    severity = "high"
    message = "jailbreak phrasing: a persona or mode without rules"
  strings:
    $now = /\byou\s+are\s+now\s+(in\s+)?(DAN|developer\s+mode|jailbroken|unrestricted|an?\s+unfiltered|god\s+mode|free\s+of)/i
    $mode = /\b(enable|activate|enter)\s+(developer|god|jailbreak|DAN)\s+mode\b/i
    $rules = /\b(no|without|free\s+from)\s+(any\s+)?(ethical|safety|moral|content)\s+(guidelines|restrictions|limits|constraints|filters|policies)\b/i
    $dan = /\bdo\s+anything\s+now\b/i
  condition:
    any of them
}

rule fake_authority_message {
  meta:
    category = "prompt_injection"
    severity = "medium"
    message = "text dressed as a system, developer or administrator message"
  strings:
    $tag = /<\s*\/?\s*(system|system_prompt|im_start|\|im_start\||admin_instructions)\s*>/i
    $bracket = /\[\s*(SYSTEM|ADMIN|DEVELOPER)\s*(MESSAGE|OVERRIDE|INSTRUCTION|NOTE|PROMPT)?\s*\]\s*:/
    $new = /\b(new|updated|real|true|actual)\s+system\s+(prompt|instructions)\b/i
  condition:
    any of them
}

rule safety_bypass_instruction {
  meta:
    category = "prompt_injection"
    severity = "high"
    message = "tells the agent to bypass safety, permission or confirmation checks"
  strings:
    $a = /\b(bypass|disable|skip|ignore|circumvent|override)\s+(all\s+|any\s+)?(the\s+|your\s+)?(safety|security|permission|sandbox|approval|confirmation|user\s+confirmation)\s+(checks?|prompts?|restrictions?|measures|guardrails|dialogs?|requirements?|settings)\b/i
    $b = /\b(do\s+not|don'?t|never)\s+ask\s+(the\s+user\s+)?for\s+(permission|confirmation|approval)\b/i
    // $a as an imperative: at the start of a line, sentence, clause or list item, or after
    // a word that makes it one ("to", "please", "always", ...).
    $imp = /(^|[\n.!?:;]\s*|[-*]\s+|\b(to|please|always|then|must|should|can|you|and|now)\s+)(bypass|disable|skip|ignore|circumvent|override)\s+(all\s+|any\s+)?(the\s+|your\s+)?(safety|security|permission|sandbox|approval|confirmation|user\s+confirmation)\s+(checks?|prompts?|restrictions?|measures|guardrails|dialogs?|requirements?|settings)\b/i
  condition:
    // SKILL.md and code: any occurrence; other markdown (reference documents describing
    // what to avoid): only an imperative.
    $b or $imp or ($a and (is_skill_md or not is_markdown))
}

rule skip_permissions_flag {
  meta:
    category = "prompt_injection"
    severity = "medium"
    message = "runs an agent with its permission prompts disabled"
  strings:
    $a = "--dangerously-skip-permissions"
    $b = /--permission-mode[= ]bypassPermissions/
  condition:
    any of them
}

rule priority_override_claim {
  meta:
    category = "prompt_injection"
    severity = "medium"
    message = "claims to take precedence over the agent's other instructions"
  strings:
    $a = /\b(these|this|the\s+following)\s+(instructions?|rules?|skill)\s+(take|takes|has|have)\s+(absolute\s+|the\s+)?(highest\s+)?(precedence|priority)\s+over\b/i
    $b = /\b(supersedes?|overrides?)\s+(all|any)\s+(other|previous|prior)\s+(instructions|rules|prompts)\b/i
  condition:
    any of them
}
