/** An HTML element with attributes and text or child nodes; text is never parsed as markup. */
export function htmlElement(tag, attributes = {}, children = []) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    element.setAttribute(name, String(value));
  }
  element.append(...[children].flat());
  return element;
}

/** Fill a <dl> with [term, description] rows. */
export function fillDefinitions(list, rows) {
  list.replaceChildren(
    ...rows.flatMap(([term, description]) => [
      htmlElement("dt", {}, term),
      htmlElement("dd", {}, description),
    ]),
  );
}
