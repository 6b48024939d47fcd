export function formatPercent(value: number, digits = 1): string {
  return `${value.toFixed(digits)} %`;
}

const RATE_UNITS = ['B/s', 'KB/s', 'MB/s', 'GB/s'];

export function formatRate(bytesPerSecond: number): string {
  let value = bytesPerSecond;
  let unit = 0;
  while (value >= 1000 && unit < RATE_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(value < 10 && unit > 0 ? 1 : 0)} ${RATE_UNITS[unit]}`;
}

/** `3 d 4 h`, `2 h 5 min`, `4 min 10 s`, `12 s`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const days = Math.floor(s / 86_400);
  const hours = Math.floor((s % 86_400) / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  if (days > 0) return `${days} d ${hours} h`;
  if (hours > 0) return `${hours} h ${minutes} min`;
  if (minutes > 0) return `${minutes} min ${s % 60} s`;
  return `${s} s`;
}

/** `mm:ss` (or `h:mm:ss`) for a countdown. */
export function formatClock(seconds: number): string {
  const s = Math.max(0, Math.ceil(seconds));
  const hours = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, '0');
  const ss = String(s % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** `12 s ago`, `5 min ago`; the date and time beyond a day. */
export function formatAgo(iso: string, now: number = Date.now()): string {
  const seconds = (now - Date.parse(iso)) / 1000;
  if (seconds < 5) return 'just now';
  if (seconds < 86_400) return `${formatDuration(seconds).split(' ').slice(0, 2).join(' ')} ago`;
  return formatDateTime(iso);
}

const two = (n: number) => String(n).padStart(2, '0');

/*
 * Every time the dashboard shows is local time on a 24-hour clock, whatever the
 * browser's language: `2026-01-10 13:05:09`, or `13:05:09` where the day is clear.
 * The zone is named once, in the header (`timeZoneLabel`).
 */

/** `2026-01-10 13:05:09` (local time, 24 h). */
export function formatDateTime(iso: string | number): string {
  const d = new Date(iso);
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${formatTime(iso)}`;
}

/** `13:05:09` (local time, 24 h). */
export function formatTime(iso: string | number): string {
  const d = new Date(iso);
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** `2026-01-10 13:05` (local time, 24 h): what the time fields take. */
export function formatInputDateTime(ms: number): string {
  return formatDateTime(ms).slice(0, 16);
}

const INPUT_DATE_TIME = /^\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?\s*$/;

/** A `YYYY-MM-DD HH:MM[:SS]` local time (24 h) as a moment; null if it is not one. */
export function parseInputDateTime(text: string): Date | null {
  const m = INPUT_DATE_TIME.exec(text);
  if (!m) return null;
  const [year, month, day, hour, minute, second] = m.slice(1).map((part) => Number(part ?? 0)) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const date = new Date(year, month - 1, day, hour, minute, second);
  const same =
    date.getFullYear() === year &&
    date.getMonth() === month - 1 &&
    date.getDate() === day &&
    date.getHours() === hour &&
    date.getMinutes() === minute;
  return same ? date : null;
}

/** The zone the dashboard shows times in: `Europe/Berlin (UTC+01:00)`. */
export function timeZoneLabel(at: number = Date.now()): string {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const offset = -new Date(at).getTimezoneOffset();
  const sign = offset < 0 ? '-' : '+';
  const utc = `UTC${sign}${two(Math.floor(Math.abs(offset) / 60))}:${two(Math.abs(offset) % 60)}`;
  return zone && zone !== 'UTC' ? `${zone} (${utc})` : utc;
}

/** Plan ids and fingerprints are long hex strings: the first 8 characters tell them apart. */
export function shortId(id: string): string {
  return id.slice(0, 8);
}

export function humanize(name: string): string {
  const text = name.replaceAll('_', ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The signed-in user: `alice · Operator`, or just `Operator` when the name is the role. */
export function describeUser(name: string, role: string): string {
  return name.trim().toLowerCase() === role.toLowerCase() ? humanize(role) : `${name} · ${humanize(role)}`;
}
