import { PlistError } from './plist-error.ts';
import type { PlistDict, PlistValue } from './plist-value.ts';
import { fromBase64, hasInvalidXmlChar, isEncodableDate, parseIsoDate } from './scalars.ts';

/*
 * A single-pass parser for XML property lists. It reads only what a plist can hold: no entity
 * declarations (so no entity expansion at all), no external resources, no recursion (the nesting is
 * an explicit stack, checked against maxDepth before each container is opened). Every step moves
 * forward through the text, so the work is linear in its length.
 */

const LT = 0x3c; // <
const GT = 0x3e; // >
const SLASH = 0x2f; // /
const BANG = 0x21; // !
const QUESTION = 0x3f; // ?
const EQUALS = 0x3d; // =
const DQUOTE = 0x22; // "
const SQUOTE = 0x27; // '
/** Longer than any plist element or attribute name; keeps error messages short. */
const MAX_NAME_LENGTH = 64;

/** The only document type declaration accepted: Apple's own, which has no internal subset. */
const APPLE_DOCTYPE =
  /<!DOCTYPE\s+plist\s+PUBLIC\s+"-\/\/Apple\/\/DTD PLIST 1\.0\/\/EN"\s+"http:\/\/www\.apple\.com\/DTDs\/PropertyList-1\.0\.dtd"\s*>/y;
/** One reference at a time, anchored (sticky), of bounded length. */
const CHAR_REF = /&(?:#x([0-9A-Fa-f]{1,6})|#([0-9]{1,7})|(amp|lt|gt|quot|apos));/y;
const NAMED_ENTITIES: Readonly<Record<string, string>> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
const INTEGER = /^[+-]?\d+$/;
const REAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const SPECIAL_REALS: Readonly<Record<string, number>> = {
  nan: NaN,
  inf: Infinity,
  '+inf': Infinity,
  infinity: Infinity,
  '+infinity': Infinity,
  '-inf': -Infinity,
  '-infinity': -Infinity,
};

type Frame =
  { kind: 'dict'; dict: PlistDict; key: string | undefined } | { kind: 'array'; array: PlistValue[] };

interface OpenTag {
  name: string;
  selfClosing: boolean;
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

function isNameChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x5f || // _
    c === 0x3a || // :
    c === 0x2d || // -
    c === 0x2e // .
  );
}

function malformed(message: string): PlistError {
  return new PlistError('malformed', message);
}

/** Parses an XML plist held in a string (a leading byte-order mark is allowed). */
export function parseXmlPlist(src: string, maxDepth: number): PlistValue {
  return new XmlPlistReader(src, maxDepth).read();
}

class XmlPlistReader {
  private pos = 0;
  private seenDoctype = false;

  constructor(
    private readonly src: string,
    private readonly maxDepth: number,
  ) {}

  read(): PlistValue {
    if (this.src.charCodeAt(0) === 0xfeff) this.pos = 1;
    this.skipMisc(true);
    if (this.pos >= this.src.length) throw malformed('no <plist> element');
    const root = this.openTag();
    if (root.name !== 'plist') throw malformed(`the root element is <${root.name}>, not <plist>`);
    if (root.selfClosing) throw malformed('<plist> holds no value');
    const value = this.readValues();
    this.skipMisc(false);
    if (this.pos < this.src.length) throw malformed('content after </plist>');
    return value;
  }

  /** Whitespace, comments, processing instructions and (in the prolog) Apple's DOCTYPE. */
  private skipMisc(prolog: boolean): void {
    const src = this.src;
    for (;;) {
      this.skipSpace();
      if (this.pos >= src.length) return;
      if (src.charCodeAt(this.pos) !== LT) {
        throw malformed(prolog ? 'text before the root element' : 'text after </plist>');
      }
      const next = src.charCodeAt(this.pos + 1);
      if (next === QUESTION) this.skipPast('?>', 'processing instruction');
      else if (next === BANG) this.markup(prolog);
      else return;
    }
  }

  /** `<!` at this.pos, outside text: a comment, or the DOCTYPE, or a refused declaration. */
  private markup(doctypeAllowed: boolean): void {
    const src = this.src;
    if (src.startsWith('<!--', this.pos)) {
      this.skipPast('-->', 'comment');
      return;
    }
    if (src.startsWith('<![CDATA[', this.pos)) throw malformed('character data where an element belongs');
    if (doctypeAllowed && !this.seenDoctype && src.startsWith('<!DOCTYPE', this.pos)) {
      APPLE_DOCTYPE.lastIndex = this.pos;
      if (APPLE_DOCTYPE.test(src)) {
        this.pos = APPLE_DOCTYPE.lastIndex;
        this.seenDoctype = true;
        return;
      }
      throw new PlistError('forbidden_dtd', "only Apple's plist DOCTYPE is accepted");
    }
    throw new PlistError(
      'forbidden_dtd',
      `markup declaration ${src.slice(this.pos, this.pos + 12)}… refused`,
    );
  }

  /** The body of <plist>: exactly one value, then </plist>. */
  private readValues(): PlistValue {
    const src = this.src;
    const stack: Frame[] = [];
    let root: PlistValue | undefined;
    for (;;) {
      this.skipSpace();
      if (this.pos >= src.length) throw malformed('unexpected end of document');
      if (src.charCodeAt(this.pos) !== LT) throw malformed('text where an element belongs');
      const next = src.charCodeAt(this.pos + 1);
      let value: PlistValue;
      if (next === SLASH) {
        const name = this.closeTag();
        const frame = stack.pop();
        if (frame === undefined) {
          if (name !== 'plist') throw malformed(`</${name}> closes <plist>`);
          if (root === undefined) throw malformed('<plist> holds no value');
          return root;
        }
        if (name !== frame.kind) throw malformed(`</${name}> closes <${frame.kind}>`);
        if (frame.kind === 'dict') {
          if (frame.key !== undefined) throw malformed(`<key>${frame.key.slice(0, 64)}</key> has no value`);
          value = frame.dict;
        } else {
          value = frame.array;
        }
      } else if (next === BANG) {
        this.markup(false);
        continue;
      } else if (next === QUESTION) {
        this.skipPast('?>', 'processing instruction');
        continue;
      } else {
        const tag = this.openTag();
        const top = stack[stack.length - 1];
        if (top?.kind === 'dict' && top.key === undefined) {
          if (tag.name !== 'key') throw malformed(`<${tag.name}> where a <key> belongs in <dict>`);
          const key = tag.selfClosing ? '' : this.readText('key');
          if (key === '__proto__') throw malformed('the key __proto__ is refused');
          top.key = key;
          continue;
        }
        switch (tag.name) {
          case 'dict':
          case 'array':
            if (stack.length >= this.maxDepth) {
              throw new PlistError('too_deep', `containers nested deeper than ${this.maxDepth}`);
            }
            if (tag.selfClosing) {
              value = tag.name === 'dict' ? {} : [];
              break;
            }
            stack.push(
              tag.name === 'dict' ? { kind: 'dict', dict: {}, key: undefined } : { kind: 'array', array: [] },
            );
            continue;
          case 'string':
            value = tag.selfClosing ? '' : this.readText('string');
            break;
          case 'integer':
            value = toInteger(tag.selfClosing ? '' : this.readText('integer'));
            break;
          case 'real':
            value = toReal(tag.selfClosing ? '' : this.readText('real'));
            break;
          case 'date':
            value = toDate(tag.selfClosing ? '' : this.readText('date'));
            break;
          case 'data':
            value = toData(tag.selfClosing ? '' : this.readText('data'));
            break;
          case 'true':
          case 'false':
            if (!tag.selfClosing && this.readText(tag.name).trim() !== '') {
              throw malformed(`<${tag.name}> must be empty`);
            }
            value = tag.name === 'true';
            break;
          case 'key':
            throw malformed(top?.kind === 'dict' ? 'two <key>s in a row' : '<key> outside a <dict>');
          default:
            throw malformed(`unknown element <${tag.name}>`);
        }
      }
      const parent = stack[stack.length - 1];
      if (parent === undefined) {
        if (root !== undefined) throw malformed('<plist> holds more than one value');
        root = value;
      } else if (parent.kind === 'dict') {
        parent.dict[parent.key ?? ''] = value;
        parent.key = undefined;
      } else {
        parent.array.push(value);
      }
    }
  }

  /** The text content of a leaf element up to its end tag: text, references, CDATA; no elements. */
  private readText(name: string): string {
    const src = this.src;
    let out = '';
    for (;;) {
      const lt = src.indexOf('<', this.pos);
      if (lt < 0) throw malformed(`<${name}> is not closed`);
      if (lt > this.pos) out += decodeText(src.slice(this.pos, lt));
      this.pos = lt;
      const next = src.charCodeAt(lt + 1);
      if (next === SLASH) {
        const end = this.closeTag();
        if (end !== name) throw malformed(`</${end}> closes <${name}>`);
        return out;
      }
      if (src.startsWith('<![CDATA[', lt)) {
        const close = src.indexOf(']]>', lt + 9);
        if (close < 0) throw malformed('CDATA section is not closed');
        const chunk = src.slice(lt + 9, close);
        if (hasInvalidXmlChar(chunk)) throw malformed('character not allowed in XML');
        out += chunk.includes('\r') ? chunk.replace(/\r\n?/g, '\n') : chunk;
        this.pos = close + 3;
      } else if (next === BANG) {
        this.markup(false);
      } else if (next === QUESTION) {
        this.skipPast('?>', 'processing instruction');
      } else {
        throw malformed(`an element inside <${name}>`);
      }
    }
  }

  /** `<name attr="v" ...>` or `<name .../>` at this.pos. Attributes are checked for form and ignored. */
  private openTag(): OpenTag {
    const src = this.src;
    let i = this.pos + 1;
    const start = i;
    while (isNameChar(src.charCodeAt(i))) i++;
    if (i === start || i - start > MAX_NAME_LENGTH) throw malformed('malformed tag');
    const name = src.slice(start, i);
    for (;;) {
      const spaceStart = i;
      while (isSpace(src.charCodeAt(i))) i++;
      const c = src.charCodeAt(i);
      if (c === GT) {
        this.pos = i + 1;
        return { name, selfClosing: false };
      }
      if (c === SLASH && src.charCodeAt(i + 1) === GT) {
        this.pos = i + 2;
        return { name, selfClosing: true };
      }
      if (i === spaceStart) throw malformed(`malformed tag <${name}>`);
      const attrStart = i;
      while (isNameChar(src.charCodeAt(i))) i++;
      if (i === attrStart) throw malformed(`malformed attribute in <${name}>`);
      while (isSpace(src.charCodeAt(i))) i++;
      if (src.charCodeAt(i) !== EQUALS) throw malformed(`malformed attribute in <${name}>`);
      i++;
      while (isSpace(src.charCodeAt(i))) i++;
      const quote = src.charCodeAt(i);
      if (quote !== DQUOTE && quote !== SQUOTE) throw malformed(`unquoted attribute in <${name}>`);
      i++;
      for (;;) {
        const c2 = src.charCodeAt(i);
        if (c2 === quote) break;
        if (c2 === LT || Number.isNaN(c2)) throw malformed(`malformed attribute in <${name}>`);
        i++;
      }
      i++;
    }
  }

  /** `</name>` at this.pos; returns the name. */
  private closeTag(): string {
    const src = this.src;
    let i = this.pos + 2;
    const start = i;
    while (isNameChar(src.charCodeAt(i))) i++;
    if (i === start || i - start > MAX_NAME_LENGTH) throw malformed('malformed end tag');
    const name = src.slice(start, i);
    while (isSpace(src.charCodeAt(i))) i++;
    if (src.charCodeAt(i) !== GT) throw malformed('malformed end tag');
    this.pos = i + 1;
    return name;
  }

  private skipSpace(): void {
    const src = this.src;
    let i = this.pos;
    while (isSpace(src.charCodeAt(i))) i++;
    this.pos = i;
  }

  private skipPast(terminator: string, what: string): void {
    const end = this.src.indexOf(terminator, this.pos + 2);
    if (end < 0) throw malformed(`${what} is not closed`);
    this.pos = end + terminator.length;
  }
}

/** Raw character data: line ends normalised (XML 1.0 §2.11), then character references decoded. */
function decodeText(raw: string): string {
  if (hasInvalidXmlChar(raw)) throw malformed('character not allowed in XML');
  const text = raw.includes('\r') ? raw.replace(/\r\n?/g, '\n') : raw;
  let amp = text.indexOf('&');
  if (amp < 0) return text;
  let out = '';
  let last = 0;
  while (amp >= 0) {
    CHAR_REF.lastIndex = amp;
    const m = CHAR_REF.exec(text);
    if (m === null) throw malformed(`unknown or malformed reference at "${text.slice(amp, amp + 10)}"`);
    let decoded: string;
    if (m[3] !== undefined) {
      decoded = NAMED_ENTITIES[m[3]] ?? '';
    } else {
      const code = m[1] !== undefined ? parseInt(m[1], 16) : parseInt(m[2] ?? '', 10);
      if (!isXmlCodePoint(code)) throw malformed(`character reference to U+${code.toString(16)} not allowed`);
      decoded = String.fromCodePoint(code);
    }
    out += text.slice(last, amp) + decoded;
    last = CHAR_REF.lastIndex;
    amp = text.indexOf('&', last);
  }
  return out + text.slice(last);
}

function isXmlCodePoint(c: number): boolean {
  return (
    c === 0x9 ||
    c === 0xa ||
    c === 0xd ||
    (c >= 0x20 && c <= 0xd7ff) ||
    (c >= 0xe000 && c <= 0xfffd) ||
    (c >= 0x10000 && c <= 0x10ffff)
  );
}

function toInteger(text: string): number {
  const t = text.trim();
  if (!INTEGER.test(t)) throw malformed(`<integer> holds "${t.slice(0, 40)}"`);
  return Number(t);
}

function toReal(text: string): number {
  const t = text.trim();
  const special = SPECIAL_REALS[t.toLowerCase()];
  if (special !== undefined) return special;
  if (!REAL.test(t)) throw malformed(`<real> holds "${t.slice(0, 40)}"`);
  return Number(t);
}

function toDate(text: string): Date {
  const date = parseIsoDate(text.trim());
  if (date === undefined || !isEncodableDate(date)) throw malformed(`<date> holds "${text.slice(0, 40)}"`);
  return date;
}

function toData(text: string): Uint8Array {
  const bytes = fromBase64(text);
  if (bytes === undefined) throw malformed('<data> is not base64');
  return bytes;
}
