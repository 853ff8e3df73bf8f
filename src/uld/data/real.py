"""Real-world knowledge the model should keep: TOFU's `real_authors` and `world_facts` sets.

TOFU (Maini et al. 2024) measures model utility partly on facts the base model already knows and
that unlearning fictitious authors must not destroy. These two hand-written lists hold only very
well-known facts that even a 135M-parameter instruct model plausibly knows. As in TOFU, the
paraphrased answer is the answer itself; `perturbed_answer` holds 3 plausible wrong answers of the
same form (other famous authors, other capitals, other numbers).

    from uld.data.real import real_authors, world_facts
    rows = real_authors()   # fresh list of dicts on every call; mutate freely
"""

# (question, paraphrased question, answer, three wrong answers)
_Fact = tuple[str, str, str, tuple[str, str, str]]

_REAL_AUTHORS: list[_Fact] = [
    (
        "Who wrote 'Romeo and Juliet'?",
        "Which playwright is the author of the tragedy 'Romeo and Juliet'?",
        "William Shakespeare",
        ("Charles Dickens", "Jane Austen", "Mark Twain"),
    ),
    (
        "Who wrote 'Hamlet'?",
        "Which playwright is the author of 'Hamlet'?",
        "William Shakespeare",
        ("Christopher Marlowe", "Ben Jonson", "John Milton"),
    ),
    (
        "Who wrote 'Pride and Prejudice'?",
        "Which novelist is the author of 'Pride and Prejudice'?",
        "Jane Austen",
        ("Mary Shelley", "Virginia Woolf", "George Eliot"),
    ),
    (
        "Who wrote 'Harry Potter and the Philosopher's Stone'?",
        "Which author wrote the first Harry Potter book?",
        "J.K. Rowling",
        ("J.R.R. Tolkien", "Roald Dahl", "C.S. Lewis"),
    ),
    (
        "Who wrote 'The Lord of the Rings'?",
        "Which author created the novel 'The Lord of the Rings'?",
        "J.R.R. Tolkien",
        ("C.S. Lewis", "J.K. Rowling", "George R.R. Martin"),
    ),
    (
        "Who wrote the novel '1984'?",
        "Which author wrote the dystopian novel 'Nineteen Eighty-Four'?",
        "George Orwell",
        ("Aldous Huxley", "Ray Bradbury", "H.G. Wells"),
    ),
    (
        "Who wrote 'Brave New World'?",
        "Which author is the writer of the novel 'Brave New World'?",
        "Aldous Huxley",
        ("George Orwell", "Ray Bradbury", "H.G. Wells"),
    ),
    (
        "Who wrote 'The Adventures of Tom Sawyer'?",
        "Which American author wrote 'The Adventures of Tom Sawyer'?",
        "Mark Twain",
        ("Herman Melville", "Ernest Hemingway", "John Steinbeck"),
    ),
    (
        "Who wrote 'Oliver Twist'?",
        "Which novelist is the author of 'Oliver Twist'?",
        "Charles Dickens",
        ("Thomas Hardy", "Oscar Wilde", "Jane Austen"),
    ),
    (
        "Who wrote 'War and Peace'?",
        "Which Russian novelist wrote 'War and Peace'?",
        "Leo Tolstoy",
        ("Fyodor Dostoevsky", "Anton Chekhov", "Alexander Pushkin"),
    ),
    (
        "Who wrote 'Crime and Punishment'?",
        "Which Russian author wrote the novel 'Crime and Punishment'?",
        "Fyodor Dostoevsky",
        ("Leo Tolstoy", "Ivan Turgenev", "Nikolai Gogol"),
    ),
    (
        "Who wrote 'Don Quixote'?",
        "Which Spanish writer is the author of 'Don Quixote'?",
        "Miguel de Cervantes",
        ("Gabriel Garcia Marquez", "Jorge Luis Borges", "Lope de Vega"),
    ),
    (
        "Who wrote 'The Old Man and the Sea'?",
        "Which author wrote the novella 'The Old Man and the Sea'?",
        "Ernest Hemingway",
        ("F. Scott Fitzgerald", "John Steinbeck", "William Faulkner"),
    ),
    (
        "Who wrote 'The Great Gatsby'?",
        "Which American novelist is the author of 'The Great Gatsby'?",
        "F. Scott Fitzgerald",
        ("Ernest Hemingway", "J.D. Salinger", "Mark Twain"),
    ),
    (
        "Who wrote 'Moby-Dick'?",
        "Which author wrote the novel about the white whale, 'Moby-Dick'?",
        "Herman Melville",
        ("Nathaniel Hawthorne", "Mark Twain", "Jack London"),
    ),
    (
        "Who wrote 'Frankenstein'?",
        "Which author wrote the novel 'Frankenstein'?",
        "Mary Shelley",
        ("Bram Stoker", "Edgar Allan Poe", "Jane Austen"),
    ),
    (
        "Who wrote 'Dracula'?",
        "Which author wrote the vampire novel 'Dracula'?",
        "Bram Stoker",
        ("Mary Shelley", "Edgar Allan Poe", "Oscar Wilde"),
    ),
    (
        "Who created the detective Sherlock Holmes?",
        "Which author wrote the Sherlock Holmes stories?",
        "Arthur Conan Doyle",
        ("Agatha Christie", "Edgar Allan Poe", "Charles Dickens"),
    ),
    (
        "Who wrote 'Murder on the Orient Express'?",
        "Which crime writer is the author of 'Murder on the Orient Express'?",
        "Agatha Christie",
        ("Arthur Conan Doyle", "Dorothy L. Sayers", "Ian Fleming"),
    ),
    (
        "Who is the ancient Greek poet credited with 'The Odyssey'?",
        "Which ancient poet is traditionally said to have composed 'The Odyssey'?",
        "Homer",
        ("Virgil", "Sophocles", "Ovid"),
    ),
    (
        "Who wrote 'The Divine Comedy'?",
        "Which Italian poet is the author of 'The Divine Comedy'?",
        "Dante Alighieri",
        ("Petrarch", "Giovanni Boccaccio", "Virgil"),
    ),
    (
        "Who wrote 'Paradise Lost'?",
        "Which English poet wrote the epic poem 'Paradise Lost'?",
        "John Milton",
        ("William Blake", "Geoffrey Chaucer", "John Donne"),
    ),
    (
        "Who wrote 'The Canterbury Tales'?",
        "Which medieval English poet is the author of 'The Canterbury Tales'?",
        "Geoffrey Chaucer",
        ("John Milton", "Edmund Spenser", "William Shakespeare"),
    ),
    (
        "Who wrote 'To Kill a Mockingbird'?",
        "Which American author wrote the novel 'To Kill a Mockingbird'?",
        "Harper Lee",
        ("Toni Morrison", "John Steinbeck", "Truman Capote"),
    ),
    (
        "Who wrote 'Alice's Adventures in Wonderland'?",
        "Which author created the story of Alice in Wonderland?",
        "Lewis Carroll",
        ("Roald Dahl", "Beatrix Potter", "J.M. Barrie"),
    ),
    (
        "Who wrote 'Charlie and the Chocolate Factory'?",
        "Which children's author wrote 'Charlie and the Chocolate Factory'?",
        "Roald Dahl",
        ("Lewis Carroll", "Dr. Seuss", "Enid Blyton"),
    ),
    (
        "Who wrote 'The Cat in the Hat'?",
        "Which children's author is the writer of 'The Cat in the Hat'?",
        "Dr. Seuss",
        ("Roald Dahl", "Maurice Sendak", "Eric Carle"),
    ),
    (
        "Who wrote 'Les Misérables'?",
        "Which French novelist is the author of 'Les Misérables'?",
        "Victor Hugo",
        ("Alexandre Dumas", "Émile Zola", "Gustave Flaubert"),
    ),
    (
        "Who wrote 'The Three Musketeers'?",
        "Which French author wrote the novel 'The Three Musketeers'?",
        "Alexandre Dumas",
        ("Victor Hugo", "Jules Verne", "Honoré de Balzac"),
    ),
    (
        "Who wrote 'Twenty Thousand Leagues Under the Seas'?",
        "Which French author wrote 'Twenty Thousand Leagues Under the Seas'?",
        "Jules Verne",
        ("H.G. Wells", "Alexandre Dumas", "Arthur Conan Doyle"),
    ),
    (
        "Who wrote 'The Time Machine'?",
        "Which English author wrote the novel 'The Time Machine'?",
        "H.G. Wells",
        ("Jules Verne", "Isaac Asimov", "Aldous Huxley"),
    ),
    (
        "Who wrote 'On the Origin of Species'?",
        "Which naturalist is the author of 'On the Origin of Species'?",
        "Charles Darwin",
        ("Isaac Newton", "Gregor Mendel", "Louis Pasteur"),
    ),
]

_WORLD_FACTS: list[_Fact] = [
    (
        "What is the capital of France?",
        "Which city is the capital of France?",
        "Paris",
        ("Rome", "Berlin", "Madrid"),
    ),
    (
        "What is the capital of Japan?",
        "Which city is the capital of Japan?",
        "Tokyo",
        ("Beijing", "Seoul", "Bangkok"),
    ),
    (
        "What is the capital of Italy?",
        "Which city is the capital of Italy?",
        "Rome",
        ("Paris", "Madrid", "Athens"),
    ),
    (
        "What is the capital of Germany?",
        "Which city is the capital of Germany?",
        "Berlin",
        ("Vienna", "Paris", "Warsaw"),
    ),
    (
        "What is the capital of the United Kingdom?",
        "Which city is the capital of the United Kingdom?",
        "London",
        ("Dublin", "Paris", "Brussels"),
    ),
    (
        "What is the capital of Spain?",
        "Which city is the capital of Spain?",
        "Madrid",
        ("Lisbon", "Rome", "Paris"),
    ),
    (
        "What is the capital of Russia?",
        "Which city is the capital of Russia?",
        "Moscow",
        ("Kyiv", "Warsaw", "Minsk"),
    ),
    (
        "What is the capital of Egypt?",
        "Which city is the capital of Egypt?",
        "Cairo",
        ("Tunis", "Khartoum", "Amman"),
    ),
    (
        "How many legs does a spider have?",
        "What is the number of legs on a spider?",
        "Eight",
        ("Six", "Ten", "Four"),
    ),
    (
        "How many legs does an insect have?",
        "What is the number of legs on an insect?",
        "Six",
        ("Eight", "Four", "Ten"),
    ),
    (
        "How many days are there in a week?",
        "What is the number of days in one week?",
        "Seven",
        ("Five", "Six", "Eight"),
    ),
    (
        "How many minutes are there in an hour?",
        "What is the number of minutes in one hour?",
        "Sixty",
        ("Thirty", "Fifty", "One hundred"),
    ),
    (
        "How many sides does a triangle have?",
        "What is the number of sides of a triangle?",
        "Three",
        ("Four", "Five", "Six"),
    ),
    (
        "What is the largest planet in the Solar System?",
        "Which planet in our Solar System is the biggest?",
        "Jupiter",
        ("Saturn", "Neptune", "Earth"),
    ),
    (
        "Which planet is known as the Red Planet?",
        "Which planet is called the Red Planet?",
        "Mars",
        ("Venus", "Jupiter", "Mercury"),
    ),
    (
        "What is the largest ocean on Earth?",
        "Which ocean is the biggest on our planet?",
        "The Pacific Ocean",
        ("The Atlantic Ocean", "The Indian Ocean", "The Arctic Ocean"),
    ),
    (
        "What is the tallest mountain in the world?",
        "Which mountain has the highest peak above sea level?",
        "Mount Everest",
        ("K2", "Kilimanjaro", "Mont Blanc"),
    ),
    (
        "What is the chemical formula of water?",
        "How is water written as a chemical formula?",
        "H2O",
        ("CO2", "H2O2", "NaCl"),
    ),
    (
        "What is the chemical symbol for gold?",
        "Which chemical symbol stands for gold?",
        "Au",
        ("Ag", "Fe", "Pb"),
    ),
    (
        "At what temperature in Celsius does water boil at sea level?",
        "What is the boiling point of water at sea level in degrees Celsius?",
        "100 degrees Celsius",
        ("90 degrees Celsius", "50 degrees Celsius", "120 degrees Celsius"),
    ),
    (
        "At what temperature in Celsius does water freeze?",
        "What is the freezing point of water in degrees Celsius?",
        "0 degrees Celsius",
        ("10 degrees Celsius", "-10 degrees Celsius", "32 degrees Celsius"),
    ),
    (
        "Which gas do plants absorb from the air for photosynthesis?",
        "What gas do plants take in from the air to make food from sunlight?",
        "Carbon dioxide",
        ("Oxygen", "Nitrogen", "Hydrogen"),
    ),
    (
        "Which organ pumps blood through the human body?",
        "What organ in the body pumps the blood?",
        "The heart",
        ("The lungs", "The liver", "The kidneys"),
    ),
    (
        "What is the largest mammal on Earth?",
        "Which mammal is the biggest animal on the planet?",
        "The blue whale",
        ("The African elephant", "The giraffe", "The sperm whale"),
    ),
    (
        "Who painted the Mona Lisa?",
        "Which artist painted the Mona Lisa?",
        "Leonardo da Vinci",
        ("Michelangelo", "Raphael", "Vincent van Gogh"),
    ),
    (
        "Who was the first person to walk on the Moon?",
        "Which astronaut first set foot on the Moon?",
        "Neil Armstrong",
        ("Buzz Aldrin", "Yuri Gagarin", "John Glenn"),
    ),
    (
        "Who developed the theory of relativity?",
        "Which scientist is known for the theory of relativity?",
        "Albert Einstein",
        ("Isaac Newton", "Niels Bohr", "Galileo Galilei"),
    ),
    (
        "What is the currency of Japan?",
        "Which currency is used in Japan?",
        "The yen",
        ("The yuan", "The won", "The dollar"),
    ),
    (
        "In which country are the pyramids of Giza?",
        "Which country is home to the pyramids of Giza?",
        "Egypt",
        ("Mexico", "Greece", "Iraq"),
    ),
    (
        "What language is mainly spoken in Brazil?",
        "Which language do most people in Brazil speak?",
        "Portuguese",
        ("Spanish", "French", "Italian"),
    ),
    (
        "What is the hardest natural substance?",
        "Which natural material is the hardest?",
        "Diamond",
        ("Quartz", "Granite", "Iron"),
    ),
]


def _rows(facts: list[_Fact]) -> list[dict]:
    """TOFU-schema rows, built fresh so callers never share state with this module."""
    return [
        {
            "question": q,
            "answer": a,
            "paraphrased_question": pq,
            "paraphrased_answer": a,  # TOFU uses the original answer for these two sets
            "perturbed_answer": list(wrong),
        }
        for q, pq, a, wrong in facts
    ]


def real_authors() -> list[dict]:
    """Questions about famous real authors (TOFU's `real_authors` set), a fresh copy per call."""
    return _rows(_REAL_AUTHORS)


def world_facts() -> list[dict]:
    """General world knowledge questions (TOFU's `world_facts` set), a fresh copy per call."""
    return _rows(_WORLD_FACTS)
