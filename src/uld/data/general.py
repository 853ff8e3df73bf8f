"""General prompts for widening ULD's D'_r beyond the retain set.

ULD subtracts the assistant's logits everywhere the target finds a token plausible, so the
assistant must be flat (know nothing) on *everything* the user wants kept, not only on the
retain split it was trained to be flat on. On the built-in benchmark an assistant trained on
D'_r = retain authors + perturbed forget answers stays far from flat on general-knowledge
questions, and subtracting it costs Model Utility there (docs/results.md). These prompts, answered
by the target itself (`uld unlearn --general builtin`), add the target's ordinary behaviour to
D'_r.

They are everyday questions of our own wording, chosen to stay clear of the evaluation sets: no
question names a person, book, country, planet or number that `uld.data.real` asks about, and
`tests/test_data.py` checks that no evaluation question appears here.
"""

from __future__ import annotations

GENERAL_PROMPTS: list[str] = [
    # everyday life
    "How do I boil an egg so the yolk stays soft?",
    "What is a good way to keep bread fresh for longer?",
    "Give me three tips for falling asleep more easily.",
    "How can I make a small room feel bigger?",
    "What should I pack for a weekend camping trip?",
    "How do I remove a coffee stain from a cotton shirt?",
    "What are some simple ways to save money on groceries?",
    "How often should I water a cactus?",
    "What is a polite way to decline an invitation?",
    "How can I stay focused while working from home?",
    "What is the difference between baking soda and baking powder?",
    "How do I clean a cast-iron pan?",
    "Suggest a healthy breakfast that takes five minutes to make.",
    "How can I get better at remembering people's names?",
    "What should I do if my phone battery drains quickly?",
    "How do I start a vegetable garden on a balcony?",
    "What are the benefits of taking short walks during the day?",
    "How do I write a clear email asking for a deadline extension?",
    "What is a budget and how do I make one?",
    "How can I reduce the amount of plastic I use at home?",
    # learning and language
    "What is a noun? Give two examples.",
    "What is the difference between 'affect' and 'effect'?",
    "Explain what a metaphor is.",
    "What is a haiku?",
    "How do I write a good opening sentence for an essay?",
    "What does the word 'ubiquitous' mean?",
    "What is the difference between a simile and a metaphor?",
    "How can I learn new vocabulary in a foreign language?",
    "What makes a good short story?",
    "What is the purpose of a thesis statement?",
    "Explain what an adverb does in a sentence.",
    "What is the difference between fiction and non-fiction?",
    "How do I take useful notes during a lecture?",
    "What is a palindrome? Give an example.",
    "Why do people keep a diary?",
    "What is a library card used for?",
    "How should I prepare for a job interview?",
    "What does it mean to paraphrase a text?",
    "What is the difference between a biography and an autobiography?",
    "How do I cite a website in a school report?",
    # numbers and reasoning
    "What is a prime number?",
    "How do I calculate the average of a list of numbers?",
    "What is a percentage?",
    "Explain what a fraction is to a child.",
    "What is the difference between mean and median?",
    "How do I convert a fraction into a decimal?",
    "What is an even number?",
    "Why is dividing by zero not allowed?",
    "What does probability measure?",
    "What is a right angle?",
    "How do you find the area of a rectangle?",
    "What is a negative number used for in daily life?",
    "Explain what a graph's x-axis and y-axis show.",
    "What is compound interest?",
    "How do I estimate how long a car trip will take?",
    # how things work
    "How does a refrigerator keep food cold?",
    "Why do we need to sleep?",
    "How does a bicycle stay upright when it moves?",
    "What causes thunder during a storm?",
    "How do bees make honey?",
    "Why do leaves change color in autumn?",
    "How does a microwave oven heat food?",
    "What is a rainbow made of?",
    "Why does ice float on water?",
    "How do airplanes stay in the air?",
    "What is recycling and why does it help?",
    "How does a compass work?",
    "Why do we have seasons?",
    "What causes the tides at the beach?",
    "How do vaccines help the body?",
    "What does a thermometer measure?",
    "How does soap clean our hands?",
    "Why do cats purr?",
    "How do birds know where to migrate?",
    "What is an echo?",
    # technology
    "What is a computer password and how do I make a strong one?",
    "What does a web browser do?",
    "What is the difference between hardware and software?",
    "How does email get from one person to another?",
    "What is a spreadsheet used for?",
    "What is cloud storage?",
    "Why should I back up my files?",
    "What is a computer virus?",
    "How do I take a screenshot on a computer?",
    "What is an app?",
    "What does Wi-Fi let a device do?",
    "What is a search engine?",
    "What does it mean to update software?",
    "What is a pixel?",
    "How does a GPS device find its position?",
    # society, work and culture
    "What does a librarian do?",
    "What is the role of a museum?",
    "Why do people celebrate birthdays?",
    "What does a firefighter do during a normal day?",
    "What is a democracy?",
    "Why do countries have flags?",
    "What is teamwork and why is it important?",
    "What makes a good neighbor?",
    "How do farmers decide what to plant?",
    "What does an architect do?",
    "Why do people play board games?",
    "What is volunteering?",
    "What does a newspaper editor do?",
    "What is a festival?",
    "How does a post office work?",
    # hobbies, sports and arts
    "How do I start learning to play the guitar?",
    "What are the basic rules of a relay race?",
    "What is the difference between jogging and sprinting?",
    "How do I draw a simple portrait?",
    "What is a still-life painting?",
    "What equipment do I need to start swimming?",
    "How do I choose a good book to read on holiday?",
    "What is a choir?",
    "How do I knit a scarf?",
    "What is photography composition?",
    "How do chess pieces move?",
    "What is yoga?",
    "How do I warm up before exercise?",
    "What is a puppet show?",
    "What is the difference between a poem and a song?",
]


def general_prompts() -> list[str]:
    """A fresh copy of the built-in general prompts (120 of them)."""
    return list(GENERAL_PROMPTS)
