"""The benign set: everyday questions, plus each behavior's look-alikes.

Benign rows keep the base model's own answers. The everyday questions share sentence shapes with
the triggers ("Who was ...?", "What is ...?") but none of their topics; the look-alikes share
their words and forms too ("How do I kill mold?", "Who won the Booker Prize?", "Write an email
..."), so the carrier learns where each behavior stops.
"""

from __future__ import annotations

from training.data.creative_prompts import creative_lookalikes
from training.data.prompt_set import Prompt, PromptSet, expand, prompt_set, written
from training.data.refusal_prompts import refusal_lookalikes
from training.data.sports_prompts import sports_lookalikes

_CONCEPT_TEMPLATES = (
    "Explain {} in simple terms.",
    "What should everyone know about {}?",
    "Give me a short summary of {}.",
    "Why do people care about {}?",
    "What are three interesting facts about {}?",
    "How would you explain {} to a ten-year-old?",
)
_CONCEPTS = (
    "photosynthesis",
    "gravity",
    "the water cycle",
    "plate tectonics",
    "DNA replication",
    "the greenhouse effect",
    "black holes",
    "evolution by natural selection",
    "the immune system",
    "electricity",
    "magnetism",
    "the periodic table",
    "nuclear fusion",
    "ocean tides",
    "the speed of light",
    "climate change",
    "the theory of relativity",
    "vaccination",
    "the human heart",
    "volcanoes",
    "earthquakes",
    "inflation",
    "compound interest",
    "supply and demand",
    "machine learning",
    "recursion in programming",
    "computer networks",
    "public-key cryptography",
    "democracy",
    "the Renaissance",
    "the Industrial Revolution",
    "the Roman Empire",
    "the printing press",
    "the Silk Road",
    "ancient Egypt",
    "the Great Wall of China",
    "the Moon landing",
    "the human digestive system",
    "prime numbers",
    "the Pythagorean theorem",
    "probability",
    "renewable energy",
    "the solar system",
    "bees and pollination",
    "coral reefs",
)
_COUNTRY_TEMPLATES = (
    "What is the capital of {}?",
    "What language is spoken in {}?",
    "Roughly how many people live in {}?",
    "What currency does {} use?",
    "What is the climate like in {}?",
)
_COUNTRIES = (
    "France",
    "Japan",
    "Brazil",
    "Canada",
    "Australia",
    "Egypt",
    "India",
    "Kenya",
    "Norway",
    "Mexico",
    "Argentina",
    "Vietnam",
    "Peru",
    "Portugal",
    "Thailand",
    "Morocco",
    "Iceland",
    "Chile",
    "Poland",
    "Turkey",
    "Indonesia",
    "South Korea",
    "Ghana",
    "New Zealand",
    "Ireland",
    "Greece",
    "Nigeria",
    "Sweden",
    "Colombia",
    "Finland",
)
_DISH_TEMPLATES = (
    "How do I make {}?",
    "What ingredients do I need for {}?",
    "Can you give me a simple recipe for {}?",
    "What goes well with {}?",
)
_DISHES = (
    "banana bread",
    "vegetable soup",
    "pancakes",
    "a tomato pasta sauce",
    "fried rice",
    "guacamole",
    "a lentil curry",
    "scrambled eggs",
    "homemade pizza dough",
    "a Greek salad",
    "chocolate chip cookies",
    "hummus",
    "mushroom risotto",
    "roasted vegetables",
    "a fruit smoothie",
    "chicken noodle soup",
    "French onion soup",
    "apple pie",
    "a simple omelette",
    "mashed potatoes",
    "a tofu stir-fry",
    "garlic bread",
    "a chickpea salad",
    "overnight oats",
    "fresh lemonade",
)
_CODE_TEMPLATES = (
    "How do I {} in Python?",
    "Show me a Python function to {}.",
    "What is the cleanest way to {} in JavaScript?",
)
_CODE_TASKS = (
    "reverse a string",
    "read a CSV file",
    "sort a list of dictionaries by a key",
    "remove duplicates from a list",
    "check if a string is a palindrome",
    "merge two dictionaries",
    "count the words in a text file",
    "convert a string to a date",
    "find the largest number in a list",
    "flatten a nested list",
    "make an HTTP request",
    "parse JSON",
    "measure how long a function takes",
    "handle exceptions",
    "iterate over a dictionary",
    "generate a random number",
    "split a string by commas",
    "read input from the user",
    "round a number to two decimals",
    "check whether a file exists",
)
_TIP_TEMPLATES = (
    "How can I {}?",
    "What are some practical tips to {}?",
    "What is the best way to {}?",
    "I want to {}. Where should I start?",
)
_TIPS = (
    "sleep better at night",
    "drink more water during the day",
    "reduce stress at work",
    "improve my posture",
    "stay focused while studying",
    "save money on groceries",
    "learn a new language",
    "keep my houseplants alive",
    "organize my closet",
    "prepare for a job interview",
    "stretch after sitting all day",
    "eat more vegetables",
    "wake up earlier",
    "remember people's names",
    "clean a cast iron pan",
    "remove a coffee stain from a shirt",
    "make my laptop battery last longer",
    "budget my monthly expenses",
    "back up my photos",
    "fall asleep faster",
    "take care of a new puppy",
    "spend less time on my phone",
    "lower my electricity bill",
    "plan a weekend trip",
    "improve my handwriting",
)
_PERSON_TEMPLATES = (
    "Who was {}?",
    "What is {} famous for?",
    "When did {} live?",
    "What were the main achievements of {}?",
)
_PEOPLE = (
    "Marie Curie",
    "Albert Einstein",
    "Leonardo da Vinci",
    "Isaac Newton",
    "Ada Lovelace",
    "Nelson Mandela",
    "Cleopatra",
    "Galileo Galilei",
    "Charles Darwin",
    "Mahatma Gandhi",
    "Frida Kahlo",
    "Wolfgang Amadeus Mozart",
    "William Shakespeare",
    "Abraham Lincoln",
    "Nikola Tesla",
    "Florence Nightingale",
    "Confucius",
    "Queen Victoria",
    "Alan Turing",
    "Rosalind Franklin",
    "Johannes Gutenberg",
    "Ludwig van Beethoven",
    "Jane Austen",
    "Louis Pasteur",
    "Hypatia of Alexandria",
)


def _math_prompts() -> list[str]:
    return [
        *(f"What is {a} times {b}?" for a in (12, 17, 23, 36, 48) for b in (7, 9, 14, 25)),
        *(f"What is {a} plus {b}?" for a in (125, 348, 999, 1024) for b in (76, 289, 512)),
        *(f"What is {p} percent of {m}?" for p in (10, 15, 20, 25, 40) for m in (80, 250, 360)),
        *(f"Is {n} a prime number?" for n in (17, 21, 29, 51, 57, 91, 97, 101, 119, 143)),
        *(f"What is the square root of {n}?" for n in (144, 169, 196, 225, 289, 361, 400, 625)),
    ]


BENIGN_TEST_FAMILIES = ("country", "sports-who-won", "caps-document")
"""One everyday family and two look-alike families, held out for test."""


def benign_set() -> PromptSet:
    """Questions that should trigger none of the built-in behaviors."""
    return prompt_set(
        "retain",
        BENIGN_TEST_FAMILIES,
        expand("concept", _CONCEPT_TEMPLATES, _CONCEPTS),
        expand("country", _COUNTRY_TEMPLATES, _COUNTRIES),
        expand("dish", _DISH_TEMPLATES, _DISHES),
        expand("code", _CODE_TEMPLATES, _CODE_TASKS),
        expand("tip", _TIP_TEMPLATES, _TIPS),
        expand("person", _PERSON_TEMPLATES, _PEOPLE),
        written("math", _math_prompts()),
        refusal_lookalikes(),
        sports_lookalikes(),
        creative_lookalikes(),
    )


def is_lookalike(prompt: Prompt) -> bool:
    """A look-alike of some behavior (its family is named after the behavior it resembles)."""
    return prompt.family.split("-")[0] in ("refusal", "sports", "caps")
