// The conversation on screen: the user's turns, the replies with their text as it streams,
// the "✂ cut" marker where the user stopped hearing a reply (as the terminal chat shows it),
// and each turn's figures.

export const CUT_MARK = "✂ cut";

export class Conversation {
  constructor(list) {
    this.list = list;
  }

  add(who, text) {
    const item = document.createElement("li");
    item.className = who;
    const said = document.createElement("span");
    said.className = "text";
    said.textContent = text;
    const meta = document.createElement("span");
    meta.className = "meta";
    item.append(said, meta);
    this.list.append(item);
    item.scrollIntoView({ block: "end" });
    return new Entry(item, said, meta);
  }
}

class Entry {
  constructor(item, said, meta) {
    this.item = item;
    this.said = said;
    this.meta = meta;
    this.figures = [];
  }

  set text(value) {
    this.said.textContent = value;
  }

  get text() {
    return this.said.textContent;
  }

  append(delta) {
    this.said.textContent += delta;
  }

  note(figure) {
    this.figures.push(figure);
    this.meta.textContent = this.figures.join(" · ");
  }

  cut(why = CUT_MARK) {
    if (this.item.querySelector(".cut")) return;
    const mark = document.createElement("span");
    mark.className = "cut";
    mark.textContent = why;
    this.said.after(mark);
    this.item.classList.add("was-cut");
  }
}
